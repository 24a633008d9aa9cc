"""PDF extraction speed and memory, against the embed rate (issue 24).

    python -m bench.pdf_extract [--pages 2000] [--rounds 3] [--embed-chunks 200] [PDF ...]

- A generated PDF of `--pages` pages, each about 2,400 characters of the Python docs (the
  demo corpus's prose and code, Helvetica, Flate-compressed): pages/s in the calling
  process and through the extractor worker (the default path).
- Any PDF named on the command line, the same way (e.g. the manuals Debian ships:
  /usr/share/doc/libtasn1-doc/libtasn1.pdf, /usr/share/doc/shared-mime-info/*.pdf).
- Per-file cost of the worker: 100 one-page PDFs inline and through the worker, and the
  worker's start-up.
- Peak RSS (VmHWM) of a fresh process extracting the generated PDF inline, beside one
  extracting a 20-page PDF: what the worker's memory limit must hold.
- Extracted tokens/s through the worker (counted by the default model's tokenizer)
  against the engine's embedding tokens/s, measured in the same run, round by round: each
  round extracts the generated PDF through the worker, then embeds `--embed-chunks` of its
  chunks (corpusmill's chunker, 200 tokens, overlap 32) with the default model
  (`CORPUSMILL_DTYPE=auto`). The paired ratio is the share of a PDF ingest spent
  extracting, as extraction runs before embedding.

Results are printed and written to bench/out/pdf_extract.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench.report import save, spread
from corpusmill.sources.isolation import ReadLimits, Worker, call
from tools.sample_documents import pdf

REPO = Path(__file__).resolve().parents[1]
TARGET = "corpusmill.sources.pdf:extract_pdf"
BIG = ReadLimits(max_pages=1_000_000, timeout_s=3600)


def pydoc_pages(n: int, chars: int = 2400) -> list[str]:
    from pydoc_data.topics import topics

    text = " ".join(" ".join(topics[k].split()) for k in sorted(topics))
    step = chars
    return [text[(i * step) % (len(text) - step) :][:step] for i in range(n)]


def timed(fn, rounds: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def pages_per_s(data: bytes, rounds: int, worker: Worker | None) -> dict:
    def run():
        out = worker.run(TARGET, data, BIG) if worker else call(TARGET, data, BIG)
        if isinstance(out, str):
            raise SystemExit(f"extraction failed: {out}")
        return out

    if worker:
        run()  # start the worker outside the timing
    times, out = timed(run, rounds)
    n = len(out.structure.pages)  # type: ignore[union-attr]
    return {
        "pages": n,
        "chars_per_page": round(len(out.text) / n),  # type: ignore[union-attr]
        "pages_per_s": spread([n / t for t in times]),
        "_text": out.text,  # type: ignore[union-attr]
    }


def peak_rss_mb(path: Path) -> int:
    script = textwrap.dedent(
        f"""
        from corpusmill.sources.isolation import call, ReadLimits
        out = call({TARGET!r}, open({str(path)!r}, "rb").read(),
                   ReadLimits(max_pages=10**6, timeout_s=3600))
        assert not isinstance(out, str), out
        print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    return int(res.stdout.split()[-1])


def paired(data: bytes, rounds: int, worker: Worker, model, chunks: list[str]) -> dict:
    """Round by round: the PDF through the worker (pages/s, extracted tokens/s), then the
    same sample of chunks through the engine (tokens/s); the share of an ingest spent
    extracting, paired within each round."""
    first = worker.run(TARGET, data, BIG)  # a warm worker; the text, to count its tokens
    assert not isinstance(first, str), first
    n_pages, n_tokens = len(first.structure.pages), tokens([first.text])
    pages_s, extract_tok_s, embed_tok_s, share = [], [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = worker.run(TARGET, data, BIG)
        seconds = time.perf_counter() - t0
        assert not isinstance(out, str), out
        embed = embed_tokens_per_s(model, chunks)
        pages_s.append(n_pages / seconds)
        extract_tok_s.append(n_tokens / seconds)
        embed_tok_s.append(embed)
        share.append((seconds / n_tokens) / (seconds / n_tokens + 1 / embed))
    return {
        "pages": n_pages,
        "tokens_per_page": round(n_tokens / n_pages),
        "worker_pages_per_s": spread(pages_s),
        "extract_tokens_per_s": spread(extract_tok_s, 0),
        "embed_tokens_per_s": spread(embed_tok_s, 0),
        "extract_over_embed": spread(
            [e / m for e, m in zip(extract_tok_s, embed_tok_s, strict=True)], 2
        ),
        "share_of_ingest_extracting": spread(share, 3),
    }


def per_file(rounds: int) -> dict:
    one = pdf(["A one-page PDF with a short paragraph of text on it."])
    worker = Worker(ReadLimits().memory_mb)
    t0 = time.perf_counter()
    worker.run(TARGET, one, BIG)
    start = time.perf_counter() - t0
    inline, _ = timed(lambda: [call(TARGET, one, BIG) for _ in range(100)], rounds)
    isolated, _ = timed(lambda: [worker.run(TARGET, one, BIG) for _ in range(100)], rounds)
    worker.stop()
    return {
        "worker_first_call_s": round(start, 3),
        "ms_per_file_inline": spread([t * 10 for t in inline], 2),
        "ms_per_file_worker": spread([t * 10 for t in isolated], 2),
    }


def embed_sample(text: str, n_chunks: int):
    """The default model, loaded and warm, and `n_chunks` chunks of `text` as ingest cuts
    them."""
    from corpusmill.chunking import TokenChunker
    from corpusmill.model import Model

    model = Model()
    chunker = TokenChunker(model.tokenizer, 200, 32, model.max_seq_length)
    chunks = [c.text for c in chunker.chunk_documents([("pdf", text)]).chunks[:n_chunks]]
    model.encode(chunks[:16])  # load and warm up outside the timing
    return model, chunks


def embed_tokens_per_s(model, chunks: list[str]) -> float:
    _rows, stats = model.encode(chunks)
    return stats.tokens_per_second


def tokens(texts: list[str]) -> int:
    from transformers import AutoTokenizer

    from corpusmill.model.files import default_model_path

    tok = AutoTokenizer.from_pretrained(str(default_model_path()), local_files_only=True)
    return sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("pdfs", nargs="*", type=Path)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--embed-chunks", type=int, default=200)
    args = ap.parse_args()

    results: dict = {"files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / f"generated-{args.pages}.pdf"
        big.write_bytes(pdf(pydoc_pages(args.pages), title="Generated"))
        small = Path(tmp) / "generated-20.pdf"
        small.write_bytes(pdf(pydoc_pages(20)))
        worker = Worker(ReadLimits().memory_mb)
        generated = worker.run(TARGET, big.read_bytes(), BIG)
        assert not isinstance(generated, str), generated
        model, chunks = embed_sample(generated.text, args.embed_chunks)
        results["embed"] = {"chunks": len(chunks), "dtype": model.lineage().get("dtype", "")}
        for path in [big, *args.pdfs]:
            data = path.read_bytes()
            row = {"inline_pages_per_s": pages_per_s(data, args.rounds, None)["pages_per_s"]}
            row |= paired(data, args.rounds, worker, model, chunks)
            name = "generated" if path == big else path.name
            results["files"][name] = row
            print(name, json.dumps(row), flush=True)
        worker.stop()
        results["per_file"] = per_file(args.rounds)
        print("per file", json.dumps(results["per_file"]), flush=True)
        results["peak_rss_mb"] = {
            f"{args.pages} pages": peak_rss_mb(big),
            "20 pages": peak_rss_mb(small),
        }
        print("peak RSS MB", json.dumps(results["peak_rss_mb"]), flush=True)
    save("pdf_extract", results)


if __name__ == "__main__":
    main()
