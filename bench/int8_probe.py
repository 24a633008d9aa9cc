"""Would an int8 engine path pay? torch dynamic int8 quantisation of MiniLM's Linear layers.

Issue 18 part 2: an int8 path is worth adding only if SciFact nDCG@10 stays within 0.005 of
bf16 through corpusmill's own eval AND it is clearly faster than bf16. This measures both,
without touching corpusmill: the engine is built as usual in float32, then its Linear layers
are swapped by `torch.ao.quantization.quantize_dynamic` (int8 weights, activations
quantised per batch; LayerNorm, softmax, GELU and the residual stream stay float32).

    python -m bench.int8_probe speed [--docs 150 --rounds 3]
        bf16 engine vs each int8 variant, order rotated per round, paired ratios, and each
        variant's vector cosine to the float32 engine (min, mean), plus a one-layer-kind-
        at-a-time sensitivity table.
    python -m bench.int8_probe eval VARIANT --db DIR
        `corpusmill eval --modes vector` with the embedder's encoder quantised as VARIANT
        (or `bf16`: unchanged), into its own scratch store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import corpusmill.engine  # noqa: F401 (sets the OpenMP wait policy before torch loads)
from bench.corpus_texts import SCIFACT, chunk_docs, read_docs

# Linear layers of a BERT layer by kind; "ffn_out" is the down-projection after GELU,
# the one whose inputs carry the outliers int8 handles worst in BERT-family models.
KINDS = {
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attn_out": ("attention.output.dense",),
    "ffn_in": ("intermediate.dense",),
    "ffn_out": ("output.dense",),
}
VARIANTS = {
    # name: (per-channel weights?, layer kinds quantised)
    "int8_per_tensor": (False, tuple(KINDS)),
    "int8_per_channel": (True, tuple(KINDS)),
    "int8_per_channel_keep_ffn_out": (True, ("qkv", "attn_out", "ffn_in")),
}


def _is_kind(name: str, kind: str) -> bool:
    return any(
        name.endswith(s) and (s != "output.dense" or ".attention." not in name) for s in KINDS[kind]
    )


def quantize(model, per_channel: bool, kinds) -> int:
    """Swap the chosen Linear layers of `model` (float32) for dynamic int8 ones, in place."""
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    names = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and any(_is_kind(n, k) for k in kinds)
    }
    quantize_dynamic(model, {n: qconfig for n in names}, dtype=torch.qint8, inplace=True)
    return len(names)


def int8_encoder(model_path, variant: str, **options):
    from corpusmill.engine.encoder import TransformerEncoder

    per_channel, kinds = VARIANTS[variant]
    enc = TransformerEncoder(model_path, dtype="float32", pack_linear=False, **options)
    enc.quantized_layers = quantize(enc.model, per_channel, kinds)
    return enc


def cosine_stats(a, b) -> dict:
    import numpy as np

    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def speed(args) -> dict:
    import statistics

    from corpusmill.engine.encoder import TransformerEncoder, default_model_path
    from corpusmill.engine.runner import BatchEngine

    path = default_model_path()
    ref_enc = TransformerEncoder(path, dtype="float32", pack_linear=False)
    _, docs = read_docs(args.docs, Path(args.corpus))
    texts = chunk_docs("scifact", docs, ref_enc.tokenizer, ref_enc.max_seq_length).texts
    budget = 4096
    ref, _ = BatchEngine(ref_enc, max_batch_tokens=budget).encode(texts)
    engines = {"bf16": BatchEngine(TransformerEncoder(path), max_batch_tokens=budget)}
    for v in VARIANTS:
        engines[v] = BatchEngine(int8_encoder(path, v), max_batch_tokens=budget)
    out: dict = {"cosine_to_fp32": {}, "rounds": []}
    for name, engine in engines.items():
        rows, _ = engine.encode(texts)
        out["cosine_to_fp32"][name] = cosine_stats(rows, ref)
    # Sensitivity: quantise one kind of layer at a time (per-channel), the rest float32.
    out["one_kind_at_a_time"] = {}
    for kind in KINDS:
        enc = TransformerEncoder(path, dtype="float32", pack_linear=False)
        quantize(enc.model, True, (kind,))
        rows, _ = BatchEngine(enc, max_batch_tokens=budget).encode(texts)
        out["one_kind_at_a_time"][kind] = cosine_stats(rows, ref)
    names = list(engines)
    for r in range(args.rounds):
        tps = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            _, stats = engines[name].encode(texts)
            tps[name] = stats.real_tokens / stats.wall_seconds
        out["rounds"].append({k: round(v) for k, v in tps.items()})
        print(json.dumps(out["rounds"][-1]), flush=True)
    out["tokens_per_s_median"] = {
        n: round(statistics.median(r[n] for r in out["rounds"])) for n in names
    }
    out["vs_bf16_paired_median"] = {
        n: round(statistics.median(r[n] / r["bf16"] for r in out["rounds"]), 3) for n in names
    }
    out["chunks"] = len(texts)
    return out


def run_eval(args) -> int:
    """corpusmill's own eval, its embedder's encoder quantised after construction."""
    from corpusmill.engine import encoder as encoder_module
    from corpusmill.evaluation import main as eval_main

    if args.variant != "bf16":
        per_channel, kinds = VARIANTS[args.variant]
        original = encoder_module.TransformerEncoder.__init__

        def init(self, *a, **kw):
            kw.update(dtype="float32", pack_linear=False)
            original(self, *a, **kw)
            if self.kind == "embedder":
                quantize(self.model, per_channel, kinds)

        encoder_module.TransformerEncoder.__init__ = init
    ns = argparse.Namespace(data=None, db=args.db, modes="vector", limit_queries=0)
    return eval_main(ns)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--docs", type=int, default=150)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--corpus", default=str(SCIFACT))
    e = sub.add_parser("eval")
    e.add_argument("variant", choices=["bf16", *VARIANTS])
    e.add_argument("--db", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "eval":
        return run_eval(args)
    t0 = time.perf_counter()
    out = speed(args)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
