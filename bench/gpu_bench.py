"""GPU throughput: engine vs sentence-transformers vs the chat-runtime shape, per model.

Runs on a CUDA machine with torch and transformers (bench/gpu.sh). Two models: MiniLM-L6
(`--model`, else the packaged weights where installed, else random weights in its shape)
and a BERT-base shape with random weights (throughput does not depend on the weights).

Every contender encodes the same chunk texts, round after round, interleaved:
- engine: corpusmill's BatchEngine (length-sorted token-budget batches, bf16 autocast,
  tokenisation overlapped with the forward pass), as the pipeline runs it;
- engine_1_tokenize_thread / engine_N_tokenize_threads: the same with one tokenising thread
  (what corpusmill did before the first H100 run showed the GPU starved) and with more
  than the default, to show whether the CPU side still limits the GPU;
- engine_pretokenized: the engine handed the token ids the chunker stored with each chunk
  (`TokenIds`), which is what the pipeline's embeddings stage does; and the same with
  launch-ahead off (each batch's rows back on the host before the next launch);
- forward_only: the engine's batches, tokenised and padded beforehand, through the model:
  what the GPU does when nothing on the CPU is in its way;
- sentence_transformers: `encode()` with its defaults (batch 32, float32), and the same
  in bf16 (a tuned peer);
- onnxruntime_fp32 / onnxruntime_int8: MiniLM exported with torch.onnx.export, and its
  dynamic int8 quantisation, where ONNX Runtime runs on the device (on CUDA that needs
  the onnxruntime-gpu package; without it they are listed as unavailable, not installed);
- chat_shape: one forward per text, one at a time, in-process (no HTTP cost: the kindest
  version of that shape), on every 8th text (its rate does not need all of them).
A first, cold pass of the engine over the texts is reported on its own. Then two sustained
engine phases of several seconds each (from texts, and from the stored ids) sample GPU
utilisation with pynvml, and a
bf16 8192^3 matmul gives the machine's peak, converted to a tokens/s ceiling with the
model's FLOPs per token at the engine's mean padded length.

    python -m bench.gpu_bench --docs 2000 --rounds 2   # prints one JSON line last
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.ceiling import BertShape
from bench.corpus_texts import SCIFACT
from bench.peers import onnx_runtime

SHAPES = {
    "minilm-l6": dict(
        num_hidden_layers=6, hidden_size=384, intermediate_size=1536, num_attention_heads=12
    ),
    "bert-base": dict(
        num_hidden_layers=12, hidden_size=768, intermediate_size=3072, num_attention_heads=12
    ),
}


def raw_docs(n: int, corpus: Path) -> list[tuple[str, str]]:
    from corpusmill.sources import document_body, read_pydoc

    if corpus.exists():
        with corpus.open() as fh:
            recs = [json.loads(line) for _, line in zip(range(n), fh, strict=False)]
        return [(r["_id"], document_body(r.get("title", ""), r["text"])) for r in recs]
    return [
        (d.doc_id, d.body) for _, d in zip(range(n), read_pydoc(lambda _id: True), strict=False)
    ]


def vocab_file(tmp: Path, docs, minilm: Path | None) -> Path:
    """MiniLM's vocab (bert-base-uncased) where we have it, else a WordPiece vocab built
    from the corpus itself (token counts differ, the comparison does not)."""
    if minilm is not None:
        return minilm / "vocab.txt"
    words = collections.Counter(w for _, t in docs for w in re.findall(r"[a-z0-9]+", t.lower()))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    vocab += [w for w, _ in words.most_common(30000 - len(vocab)) if w not in vocab]
    path = tmp / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return path


def minilm_dir(given: str) -> tuple[Path | None, str]:
    if given:
        return Path(given), f"MiniLM-L6 weights from {Path(given).name}"
    try:
        from corpusmill.model.files import default_model_path

        return default_model_path(), "packaged MiniLM-L6 weights"
    except ImportError:
        return None, "random weights"


def random_model_dir(name: str, tmp: Path, vocab: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    path = tmp / name
    BertModel(
        BertConfig(vocab_size=30522, max_position_embeddings=512, **SHAPES[name])
    ).save_pretrained(path)
    BertTokenizerFast(vocab=str(vocab), do_lower_case=True).save_pretrained(path)
    return path


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak_tflops(device: str, n: int = 8192, iters: int = 20) -> float:
    import torch

    if device != "cuda":
        n, iters = 512, 3
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def sentence_transformer(path: Path, device: str, dtype):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device=device, model_kwargs={"dtype": dtype})
    st.encode(["warm up"] * 64)
    return st


def measure(path: Path, docs, rounds: int, device: str, sustain_s: float) -> dict:
    import torch

    from corpusmill.chunking import TokenChunker
    from corpusmill.engine.planner import plan_batches
    from corpusmill.engine.runner import BatchEngine, TokenIds
    from corpusmill.engine.telemetry import GpuSampler
    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.hardware import default_batch_tokens, default_tokenize_threads

    enc = TransformerEncoder(path, device=device)
    chunker = TokenChunker(enc.tokenizer, 200, 32, enc.max_seq_length, enc.tokenizer_id)
    chunks = chunker.chunk_documents(docs).chunks
    texts, tokens = [c.text for c in chunks], sum(c.n_tokens for c in chunks)
    stored_ids = [TokenIds(c.input_ids) if c.input_ids else c.text for c in chunks]
    cuda = device == "cuda"
    threads = default_tokenize_threads(device)
    budget = default_batch_tokens(device)
    # As the model resource builds it: pinned batches and launch-ahead on CUDA.
    as_resource = {"max_batch_tokens": budget, "pin_memory": cuda, "launch_ahead": cuda}
    engines = {
        "engine": BatchEngine(enc, tokenize_threads=threads, **as_resource),
        "engine_1_tokenize_thread": BatchEngine(enc, **as_resource),
    }
    more = max(threads, (os.cpu_count() or 2) - 2)
    if more > threads:
        engines[f"engine_{more}_tokenize_threads"] = BatchEngine(
            enc, tokenize_threads=more, **as_resource
        )
    engine = engines["engine"]
    _, warm = engine.encode(texts[:512])
    # The first pass over the corpus' batch shapes was 2.5-2.9 s slower in forward time on
    # an H100 (2026-11-28: lazy per-shape CUDA/cuBLAS set-up, paid once per process). It is
    # reported on its own, so the rounds compare warm engines with warm peers.
    _, first = engine.encode(texts)

    token_lists = enc.tokenize(texts)
    plan = plan_batches([len(t["input_ids"]) for t in token_lists], engine.max_batch_tokens)
    batches = [enc.collate([token_lists[i] for i in b]) for b in plan.batches]
    engines["engine_pretokenized"] = engine
    # The same without launch-ahead: each batch's rows copied back before the next launch.
    engines["engine_pretokenized_no_launch_ahead"] = BatchEngine(
        enc, tokenize_threads=threads, max_batch_tokens=budget, pin_memory=cuda
    )
    inputs = {"engine_pretokenized": stored_ids, "engine_pretokenized_no_launch_ahead": stored_ids}

    peers: dict = {}
    unavailable: dict[str, str] = {}
    for name, dtype in (
        ("sentence_transformers", torch.float32),
        ("sentence_transformers_bf16", torch.bfloat16),
    ):
        try:
            peers[name] = sentence_transformer(path, device, dtype)
        except Exception as exc:  # not installed, or cannot read the folder
            unavailable[name] = f"{type(exc).__name__}: {exc}"[:200]
    # ONNX Runtime, fp32 and int8, where this machine has it for the device (its CUDA
    # provider is the separate onnxruntime-gpu package: never downloaded at run time).
    why = onnx_runtime.unavailable_on(device)
    if not why:
        try:
            files = onnx_runtime.export(enc.model_dir, enc.card.revision)
            providers = ("CUDAExecutionProvider",) if cuda else ("CPUExecutionProvider",)
            for precision, file in files.items():
                onnx = onnx_runtime.OnnxEncoder(
                    file, enc.tokenizer, enc.max_seq_length, providers=providers
                )
                onnx.encode(texts[:64])
                peers[f"onnxruntime_{precision}"] = onnx
        except Exception as exc:  # export or session failed: say why, keep the rest
            why = f"{type(exc).__name__}: {exc}"[:200]
    if why:
        unavailable["onnxruntime_fp32"] = unavailable["onnxruntime_int8"] = why

    def engine_run(r: dict, key: str) -> None:
        sync(device)
        with GpuSampler(interval_s=0.05) as gpu:
            _, stats = engines[key].encode(inputs.get(key, texts))
        r[key] = tokens / stats.wall_seconds
        r[f"{key}_gpu_util_mean"] = gpu.summary().get("gpu_util_mean")
        r[f"{key}_stage_seconds"] = {
            "wall": round(stats.wall_seconds, 3),
            "tokenize": round(stats.tokenize_seconds, 3),
            "forward": round(stats.forward_seconds, 3),
            "device_wait": round(stats.device_wait_seconds, 3),
        }
        r["padding_fraction"] = round(stats.padding_fraction, 4)
        r["mean_padded_length"] = stats.padded_tokens / max(1, stats.items)

    out: dict = {
        "chunks": len(texts),
        "tokens": tokens,
        "dtype": enc.dtype_name,
        "max_batch_tokens": engine.max_batch_tokens,
        "batches": len(batches),
        "tokenize_threads": threads,
        "rounds": [],
    }
    for _ in range(rounds):
        r: dict = {}
        for key in engines:
            engine_run(r, key)
        sync(device)
        t0 = time.perf_counter()
        for b in batches:
            enc.forward(b)
        r["forward_only"] = tokens / (time.perf_counter() - t0)
        for name, st in peers.items():
            t0 = time.perf_counter()
            st.encode(texts)
            r[name] = tokens / (time.perf_counter() - t0)
        # One text per forward is ~40x slower than the engine: on every 8th text (the same
        # length mix, a 1/8 of the time), so that two rounds of both models fit in minutes.
        sample = texts[::8]
        sample_tokens = sum(c.n_tokens for c in chunks[::8])
        t0 = time.perf_counter()
        for text in sample:
            enc.forward(enc.collate(enc.tokenize([text])))
        r["chat_shape"] = sample_tokens / (time.perf_counter() - t0)
        out["rounds"].append({k: (round(v) if isinstance(v, float) else v) for k, v in r.items()})

    # Sustained phases: long enough for NVML's utilisation counter (a ~1/6 s window) to
    # mean something; the inputs repeat so the engine never runs dry. Texts, then the ids
    # the chunker stored (what the pipeline's embeddings stage feeds the engine).
    for phase, key, items in (
        ("sustained", "engine", texts),
        ("sustained_from_ids", "engine_pretokenized", stored_ids),
    ):
        per_pass = tokens / max(1.0, out["rounds"][-1][key])
        repeats = max(1, int(sustain_s / max(per_pass, 1e-3)))
        with GpuSampler(interval_s=0.05) as gpu:
            _, stats = engine.encode(items * repeats)
        out[phase] = {
            "repeats": repeats,
            "tokens_per_s": round(stats.tokens_per_second),
            "seconds": round(stats.wall_seconds, 2),
            **gpu.summary(),
        }

    for key in (*engines, "forward_only", *peers, "chat_shape"):
        values = sorted(r[key] for r in out["rounds"])
        out[f"{key}_tokens_per_s"] = values[len(values) // 2]
    if unavailable:
        out["unavailable"] = unavailable
    e = out["engine_tokens_per_s"]
    for key in (
        "sentence_transformers",
        "sentence_transformers_bf16",
        "onnxruntime_fp32",
        "onnxruntime_int8",
        "chat_shape",
    ):
        if out.get(f"{key}_tokens_per_s"):
            out[f"engine_vs_{key}"] = round(e / out[f"{key}_tokens_per_s"], 2)
    out["engine_vs_forward_only"] = round(e / out["forward_only_tokens_per_s"], 2)
    shape = BertShape.from_config(enc.config)
    seq = out["rounds"][-1]["mean_padded_length"]
    out["flops_per_token"] = round(shape.flops_per_token(seq))
    out["warmup_seconds"] = round(warm.wall_seconds, 2)
    out["engine_first_pass_tokens_per_s"] = round(first.tokens_per_second)
    out["engine_first_pass_forward_seconds"] = round(first.forward_seconds, 2)
    return out


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--corpus", default=str(SCIFACT), help="a BEIR corpus.jsonl")
    ap.add_argument("--model", default="", help="a local MiniLM-L6 folder")
    ap.add_argument("--sustain-seconds", type=float, default=6.0)
    ap.add_argument("--out", default="")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script only")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return 1
    docs = raw_docs(args.docs, Path(args.corpus))
    peak = matmul_peak_tflops(args.device)
    summary: dict = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (smoke test)",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "corpus": f"{Path(args.corpus).name} ({len(docs)} docs)",
        "bf16_matmul_peak_tflops": round(peak, 1),
        "models": {},
    }
    minilm, minilm_weights = minilm_dir(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = vocab_file(Path(tmp), docs, minilm)
        for model in SHAPES:
            if model == "minilm-l6" and minilm is not None:
                path, weights = minilm, minilm_weights
            else:
                path, weights = random_model_dir(model, Path(tmp), vocab), "random weights"
            t0 = time.perf_counter()
            m = {
                "weights": weights,
                **measure(path, docs, args.rounds, args.device, args.sustain_seconds),
            }
            ceiling = peak * 1e12 / m["flops_per_token"]
            m["ceiling_tokens_per_s"] = round(ceiling)
            m["engine_fraction_of_ceiling"] = round(m["engine_tokens_per_s"] / ceiling, 3)
            m["forward_only_fraction_of_ceiling"] = round(
                m["forward_only_tokens_per_s"] / ceiling, 3
            )
            m["seconds"] = round(time.perf_counter() - t0, 1)
            summary["models"][model] = m
            print(model, json.dumps({k: v for k, v in m.items() if k != "rounds"}), flush=True)
            if args.out:  # after each model, so a run cut short still leaves its results
                Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
