"""Would an int8 engine path pay? MiniLM's Linear layers in int8 on oneDNN (VNNI), rest bf16.

Issue 18 part 2: an int8 path is worth adding only if SciFact nDCG@10 stays within 0.005 of
bf16 through corpusmill's own eval AND it is clearly faster than bf16. The encoder is built
as the bf16 engine builds it (autocast, packed Linear weights), with the chosen kinds of
Linear layer swapped for `Int8Linear` (corpusmill/model/int8_linear.py) first; LayerNorm,
softmax, GELU and the residual stream stay as in the bf16 engine.

    python -m bench.int8_probe speed [--docs 80 --rounds 4 --batch-rounds 3 --variants a,b]
        bf16 engine vs each int8 variant: each variant's cosine to the float32 engine
        (min, mean); the forward pass paired per batch (every batch through each variant
        back to back); whole-engine passes, order rotated per round, ratios paired per
        round; with --one-kind, a one-layer-kind-at-a-time cosine table.

Retrieval quality is corpusmill's own eval, each precision into its own scratch store:
    CORPUSMILL_DTYPE=int8 corpusmill eval --modes vector --db /tmp/eval-int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.corpus_texts import SCIFACT, chunk_docs, read_docs

# The kinds of Linear layer in a BERT layer. "ffn_out" is the down-projection after GELU,
# the one whose inputs carry the outliers int8 handles worst in BERT-family models.
KINDS = ("qkv", "attn_out", "ffn_in", "ffn_out")
# "int8" is the engine's CORPUSMILL_DTYPE=int8 (qkv, ffn_in); "int8_attn_out" adds the
# attention output, "int8_all" every kind.
VARIANTS = ("int8", "int8_attn_out", "int8_all")


def quantize_kinds(model, kinds) -> None:
    """A float32 model's chosen kinds of Linear layer in int8 (Q/K/V fused, GELU fused)."""
    import torch

    from corpusmill.model.int8_linear import FusedQKV, Int8Linear, QKVPart

    for layer in model.encoder.layer:
        if "qkv" in kinds:
            sa = layer.attention.self
            fused = FusedQKV(sa.query, sa.key, sa.value)
            sa.query, sa.key, sa.value = (QKVPart(fused, i) for i in range(3))
        for kind, parent in (("attn_out", layer.attention.output), ("ffn_out", layer.output)):
            if kind in kinds:
                parent.dense = Int8Linear(parent.dense.weight, parent.dense.bias)
        if "ffn_in" in kinds:
            dense = layer.intermediate.dense
            layer.intermediate.dense = Int8Linear(dense.weight, dense.bias, gelu=True)
            layer.intermediate.intermediate_act_fn = torch.nn.Identity()


def build_encoder(model_path, variant: str, kinds=None):
    """`bf16`/`int8`: the engine's own encoder; otherwise the bf16 engine with the
    variant's kinds (or `kinds`) in int8, built as the engine builds its int8 path."""
    import torch

    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.fast_paths import precast_linear_weights
    from corpusmill.model.packed_linear import pack_linear_layers

    if variant in ("bf16", "int8"):
        return TransformerEncoder(model_path, dtype="bfloat16" if variant == "bf16" else "int8")
    if variant == "int8_attn_out":
        kinds = ("qkv", "attn_out", "ffn_in")
    enc = TransformerEncoder(model_path, dtype="float32", pack_linear=False)
    quantize_kinds(enc.model, kinds or KINDS)
    precast_linear_weights(enc.model, torch.bfloat16)
    pack_linear_layers(enc.model)
    enc.torch_dtype = torch.bfloat16  # autocast, as the bf16 engine
    return enc


def cosine_stats(a, b) -> dict:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def per_batch(engines: dict, texts: list[str], rounds: int) -> dict:
    """The forward pass alone, paired per batch: every batch of the engine's plan runs
    through each variant back to back (order alternating), so load that comes and goes
    over seconds hits both sides of a pair alike. Returns each variant's summed time over
    bf16's (as a speed ratio) and the median of the per-batch speed ratios."""
    import time as _time

    from corpusmill.engine.planner import plan_batches

    first = next(iter(engines.values()))
    enc = first.encoder
    tokens = enc.tokenize(texts)
    plan = plan_batches([len(t["input_ids"]) for t in tokens], first.max_batch_tokens, 10**9)
    batches = [enc.collate([tokens[i] for i in idx]) for idx in plan.batches]
    names = list(engines)
    total = dict.fromkeys(names, 0.0)
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for b, batch in enumerate(batches):
            order = names if (r + b) % 2 == 0 else names[::-1]
            took = {}
            for name in order:
                t0 = _time.perf_counter()
                engines[name].encoder.forward(batch)
                took[name] = _time.perf_counter() - t0
            for name in names:
                total[name] += took[name]
                ratios[name].append(took["bf16"] / took[name])
    return {
        "batches": len(batches) * rounds,
        "speed_vs_bf16_total": {n: round(total["bf16"] / total[n], 3) for n in names},
        "speed_vs_bf16_median_per_batch": {
            n: round(statistics.median(ratios[n]), 3) for n in names
        },
        "speed_vs_bf16_quartiles_per_batch": {
            n: [round(q, 3) for q in statistics.quantiles(ratios[n], n=4)] for n in names
        },
    }


def speed(args) -> dict:
    import os

    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.files import default_model_path

    path = default_model_path()
    ref_enc = TransformerEncoder(path, dtype="float32", pack_linear=False)
    _, docs = read_docs(args.docs, Path(args.corpus))
    texts = chunk_docs("scifact", docs, ref_enc.tokenizer, ref_enc.max_seq_length).texts
    budget = 4096
    ref, _ = BatchEngine(ref_enc, max_batch_tokens=budget).encode(texts)
    names = ["bf16", *args.variants]
    engines = {n: BatchEngine(build_encoder(path, n), max_batch_tokens=budget) for n in names}
    out: dict = {"chunks": len(texts), "cosine_to_fp32": {}, "rounds": [], "load": []}
    for name, engine in engines.items():
        rows, _ = engine.encode(texts)
        out["cosine_to_fp32"][name] = cosine_stats(rows, ref)
        print(name, out["cosine_to_fp32"][name], flush=True)
    if args.one_kind:
        out["one_kind_at_a_time"] = {}
        for kind in KINDS:
            enc = build_encoder(path, "kinds", kinds=(kind,))
            rows, _ = BatchEngine(enc, max_batch_tokens=budget).encode(texts)
            out["one_kind_at_a_time"][kind] = cosine_stats(rows, ref)
            print(kind, out["one_kind_at_a_time"][kind], flush=True)
    out["per_batch"] = per_batch(engines, texts, args.batch_rounds)
    print("per batch:", json.dumps(out["per_batch"]), flush=True)
    for r in range(args.rounds):
        tps = {}
        out["load"].append(round(os.getloadavg()[0], 2))
        for name in names[r % len(names) :] + names[: r % len(names)]:
            _, stats = engines[name].encode(texts)
            tps[name] = stats.real_tokens / stats.wall_seconds
        out["rounds"].append({k: round(v) for k, v in tps.items()})
        print(json.dumps(out["rounds"][-1]), "load", out["load"][-1], flush=True)
    if not out["rounds"]:
        return out
    out["vs_bf16_paired"] = {
        n: {
            "median": round(statistics.median(r[n] / r["bf16"] for r in out["rounds"]), 3),
            "min": round(min(r[n] / r["bf16"] for r in out["rounds"]), 3),
            "max": round(max(r[n] / r["bf16"] for r in out["rounds"]), 3),
        }
        for n in names
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--docs", type=int, default=80)
    s.add_argument("--rounds", type=int, default=4, help="whole-engine passes per variant")
    s.add_argument("--batch-rounds", type=int, default=3, help="passes of per-batch pairing")
    s.add_argument("--corpus", default=str(SCIFACT))
    s.add_argument("--variants", default=",".join(VARIANTS), help=f"of {VARIANTS}")
    s.add_argument("--one-kind", action="store_true", help="also the one-kind-at-a-time table")
    args = ap.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    t0 = time.perf_counter()
    out = speed(args)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
