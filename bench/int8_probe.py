"""Would an int8 engine path pay? MiniLM's Linear layers in int8 on oneDNN (VNNI), rest bf16.

Issue 18 part 2: an int8 path is worth adding only if SciFact nDCG@10 stays within 0.005 of
bf16 through corpusmill's own eval AND it is clearly faster than bf16. The encoder is built
as the bf16 engine builds it (autocast, packed Linear weights), with the chosen kinds of
Linear layer swapped for `Int8Linear` (corpusmill/model/int8_linear.py) first; LayerNorm,
softmax, GELU and the residual stream stay as in the bf16 engine.

    python -m bench.int8_probe speed [--docs 80 --rounds 4 --variants a,b]
        bf16 engine vs each int8 variant, order rotated per round, ratios paired per
        round, each variant's cosine to the float32 engine (min, mean), and a one-layer-
        kind-at-a-time cosine table.
    python -m bench.int8_probe eval VARIANT --db DIR
        `corpusmill eval --modes vector` with the embedder built as VARIANT (or `bf16`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.corpus_texts import SCIFACT, chunk_docs, read_docs

# Linear layers of a BERT layer by kind; "ffn_out" is the down-projection after GELU,
# the one whose inputs carry the outliers int8 handles worst in BERT-family models.
KINDS = {
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attn_out": ("attention.output.dense",),
    "ffn_in": ("intermediate.dense",),
    "ffn_out": ("output.dense",),
}
ALL = tuple(KINDS)
NO_FFN_OUT = ("qkv", "attn_out", "ffn_in")
VARIANTS = {  # name: (activation scheme, kinds in int8)
    "tensor_all": ("tensor", ALL),
    "tensor_keep_ffn_out": ("tensor", NO_FFN_OUT),
    "token_all": ("token", ALL),
    "token_keep_ffn_out": ("token", NO_FFN_OUT),
    # Q, K and V as one product on one quantised input; GELU inside the FFN-up product.
    "fused_all": ("fused", ALL),
    "fused_keep_ffn_out": ("fused", NO_FFN_OUT),
}


def _kind_of(name: str) -> str | None:
    for kind, suffixes in KINDS.items():
        for s in suffixes:
            if name.endswith(s) and (s != "output.dense" or ".attention." not in name):
                return kind
    return None


def quantize(model, scheme: str, kinds) -> int:
    """Swap the float32 Linear layers of the chosen kinds for `Int8Linear`, in place."""
    import torch

    from corpusmill.model.int8_linear import Int8Linear

    if scheme == "fused":
        return fuse(model, kinds)
    swaps = [
        (parent, child_name, child)
        for name, parent in model.named_modules()
        for child_name, child in parent.named_children()
        if isinstance(child, torch.nn.Linear)
        and _kind_of(f"{name}.{child_name}" if name else child_name) in kinds
    ]
    for parent, child_name, child in swaps:
        setattr(parent, child_name, Int8Linear(child, scheme))
    return len(swaps)


def fuse(model, kinds) -> int:
    import torch

    from corpusmill.model.int8_linear import FusedQKV, Int8Linear, QKVPart

    count = 0
    for layer in model.encoder.layer:
        if "qkv" in kinds:
            sa = layer.attention.self
            fused = FusedQKV(sa.query, sa.key, sa.value)
            sa.query, sa.key, sa.value = (QKVPart(fused, i) for i in range(3))
            count += 3
        if "attn_out" in kinds:
            layer.attention.output.dense = Int8Linear(layer.attention.output.dense)
            count += 1
        if "ffn_in" in kinds:
            layer.intermediate.dense = Int8Linear(layer.intermediate.dense, post_op="gelu")
            layer.intermediate.intermediate_act_fn = torch.nn.Identity()
            count += 1
        if "ffn_out" in kinds:
            layer.output.dense = Int8Linear(layer.output.dense)
            count += 1
    return count


def build_encoder(model_path, variant: str, kinds=None):
    """The bf16 engine's encoder with the variant's Linear kinds in int8 (`bf16`: none)."""
    import torch

    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.kernels import precast_linear_weights
    from corpusmill.model.packed_linear import pack_linear_layers

    if variant == "bf16":
        return TransformerEncoder(model_path, dtype="bfloat16")
    scheme, default_kinds = VARIANTS[variant]
    enc = TransformerEncoder(model_path, dtype="float32", pack_linear=False)
    enc.quantized_layers = quantize(enc.model, scheme, kinds or default_kinds)
    precast_linear_weights(enc.model, torch.bfloat16)
    pack_linear_layers(enc.model)
    enc.torch_dtype = torch.bfloat16  # autocast, as the bf16 engine
    return enc


def cosine_stats(a, b) -> dict:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


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
        for scheme in ("tensor", "token", "fused"):
            for kind in KINDS:
                enc = build_encoder(path, f"{scheme}_all", kinds=(kind,))
                rows, _ = BatchEngine(enc, max_batch_tokens=budget).encode(texts)
                out["one_kind_at_a_time"][f"{scheme}:{kind}"] = cosine_stats(rows, ref)
                print(scheme, kind, out["one_kind_at_a_time"][f"{scheme}:{kind}"], flush=True)
    for r in range(args.rounds):
        tps = {}
        out["load"].append(round(os.getloadavg()[0], 2))
        for name in names[r % len(names) :] + names[: r % len(names)]:
            _, stats = engines[name].encode(texts)
            tps[name] = stats.real_tokens / stats.wall_seconds
        out["rounds"].append({k: round(v) for k, v in tps.items()})
        print(json.dumps(out["rounds"][-1]), "load", out["load"][-1], flush=True)
    out["vs_bf16_paired"] = {
        n: {
            "median": round(statistics.median(r[n] / r["bf16"] for r in out["rounds"]), 3),
            "min": round(min(r[n] / r["bf16"] for r in out["rounds"]), 3),
            "max": round(max(r[n] / r["bf16"] for r in out["rounds"]), 3),
        }
        for n in names
    }
    return out


def run_eval(args) -> int:
    """corpusmill's own eval (vector mode), its embedder's encoder built as the variant."""
    from app.evaluation import main as eval_main
    from corpusmill.config import Settings
    from corpusmill.model import encoder as encoder_module

    if args.variant != "bf16":
        scheme, kinds = VARIANTS[args.variant]
        original = encoder_module.TransformerEncoder.__init__

        def init(self, *a, **kw):
            import torch

            from corpusmill.model.kernels import precast_linear_weights
            from corpusmill.model.packed_linear import pack_linear_layers

            kw.update(dtype="float32", pack_linear=False)
            original(self, *a, **kw)
            if self.kind == "embedder":
                quantize(self.model, scheme, kinds)
                precast_linear_weights(self.model, torch.bfloat16)
                pack_linear_layers(self.model)
                self.torch_dtype = torch.bfloat16

        encoder_module.TransformerEncoder.__init__ = init
    ns = argparse.Namespace(data=None, db=args.db, modes="vector", limit_queries=0)
    return eval_main(ns, Settings.from_env())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--docs", type=int, default=80)
    s.add_argument("--rounds", type=int, default=4)
    s.add_argument("--corpus", default=str(SCIFACT))
    s.add_argument("--variants", default=",".join(VARIANTS))
    s.add_argument("--one-kind", action="store_true", help="also the one-kind-at-a-time table")
    e = sub.add_parser("eval")
    e.add_argument("variant", choices=["bf16", *VARIANTS])
    e.add_argument("--db", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "eval":
        return run_eval(args)
    args.variants = [v for v in args.variants.split(",") if v]
    t0 = time.perf_counter()
    out = speed(args)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
