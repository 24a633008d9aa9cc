"""Where the CPU forward pass spends its time, and the alternatives tried against it.

On the engine's own batches of SciFact chunks (150 documents, 4k-token budget, bf16), in
one process, interleaved (the order rotates each pass):
- eager: `TransformerEncoder.forward`, what the engine runs (Linear layers as oneDNN
  products on packed weights, SDPA: torch's CPU flash kernel for attention);
- plain_linear: the same with `pack_linear=False` (`F.linear`), the engine as
  it was before packed_linear.py, kept for the comparison;
- small_head_attention: the same model with `small_head_attention.py`'s attention
  (float32 scores per cache-sized group of sequences);
- fp32_attention: the same model with attention computed in float32 (q, k, v upcast);
- fused_qkv: a hand-written MiniLM forward from the same weights (`F.linear`), Q, K and
  V as one matmul, activations cast to bf16 once per matmul;
- aoti (`--aoti`, ~30 s to build): `torch.export` + `aoti_compile_and_package` with
  freezing, the ahead-of-time compiled model a compile cache would load.
Each reports tokens/s over the batches (median of --passes), the paired ratio to eager,
and its worst cosine to float32. `--profile` prints the operator shares of one eager pass.
Only the packed Linear layers were kept (docs/BENCHMARKS.md says why); the script is here
so the figures can be checked.

    .venv/bin/python bench/forward_variants.py --profile [--aoti] [--variants a,b]  # JSON last
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_texts import SCIFACT, chunk_docs, read_docs  # noqa: E402


def engine_batches(enc, texts: list[str], budget: int) -> list[dict]:
    from corpusmill.engine.batching import plan_batches
    from corpusmill.engine.runner import collate

    tokens = enc.tokenize(texts)
    plan = plan_batches([len(t["input_ids"]) for t in tokens], budget)
    return [collate([tokens[i] for i in b], enc.pad_id) for b in plan.batches]


def fused_qkv_forward():
    """MiniLM's forward written out: one QKV matmul per layer, bf16 weights (`F.linear`)."""
    import torch
    import torch.nn.functional as F

    from corpusmill.engine.encoder import pool

    bf = torch.bfloat16
    enc = plain_encoder()
    model = enc.model
    layers = []
    for layer in model.encoder.layer:
        att = layer.attention.self
        layers.append(
            {
                "wqkv": torch.cat([att.query.weight, att.key.weight, att.value.weight]).to(bf),
                "bqkv": torch.cat([att.query.bias, att.key.bias, att.value.bias]).to(bf),
                "heads": att.num_attention_heads,
                "out": layer.attention.output.dense,
                "ln1": layer.attention.output.LayerNorm,
                "up": layer.intermediate.dense,
                "down": layer.output.dense,
                "ln2": layer.output.LayerNorm,
            }
        )

    def forward(batch: dict) -> np.ndarray:
        mask = batch["attention_mask"]
        with torch.inference_mode():
            x = model.embeddings(
                input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids")
            )
            b, length, hidden = x.shape
            bias = None
            if not bool(mask.all()):
                bias = torch.zeros(b, 1, 1, length, dtype=bf)
                bias = bias.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
            for p in layers:
                heads = p["heads"]
                qkv = F.linear(x.to(bf), p["wqkv"], p["bqkv"])
                qkv = qkv.view(b, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
                ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
                ctx = ctx.transpose(1, 2).reshape(b, length, hidden)
                x = p["ln1"](p["out"](ctx).float() + x)
                h = F.gelu(p["up"](x.to(bf)))
                x = p["ln2"](p["down"](h).float() + x)
            return pool(x, mask, enc.pooling).numpy()

    return forward


def encoder_with_attention(name: str):
    """A second copy of the engine's model whose attention is `name`'s function."""
    from corpusmill.engine.encoder import TransformerEncoder, default_model_path

    enc = TransformerEncoder(default_model_path(), device="cpu")
    enc.model.set_attn_implementation(name)
    return enc.forward


def small_head_attention_forward():
    """The model on `small_head_attention.py`'s attention."""
    import small_head_attention

    return encoder_with_attention(small_head_attention.register())


def fp32_attention_forward():
    """The model with SDPA run in float32 (q, k, v and the mask upcast)."""
    import small_head_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def sdpa_fp32(module, q, k, v, mask, **kw):
        if mask is not None and mask.is_floating_point():
            mask = mask.float()
        out, weights = sdpa_attention_forward(module, q.float(), k.float(), v.float(), mask, **kw)
        return out.to(q.dtype), weights

    return encoder_with_attention(small_head_attention.register("corpusmill_sdpa_fp32", sdpa_fp32))


def plain_encoder():
    """The engine's model with `pack_linear=False`: every Linear an `nn.Linear` run by
    `F.linear` on its plain bf16 weight, as the engine ran before packed_linear.py."""
    from corpusmill.engine.encoder import TransformerEncoder, default_model_path

    return TransformerEncoder(default_model_path(), device="cpu", pack_linear=False)


def plain_linear_forward():
    return plain_encoder().forward


def aoti_forward(enc, work: Path):
    """`torch.export` with dynamic batch and length, then AOTInductor with freezing."""
    import torch

    from corpusmill.engine.encoder import pool

    class Hidden(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).last_hidden_state

    batch, length = torch.export.Dim("batch", max=4096), torch.export.Dim("seq", min=2, max=512)
    example = tuple(torch.ones(4, 64, dtype=torch.long) for _ in range(3))
    t0 = time.perf_counter()
    with torch.inference_mode():
        exported = torch.export.export(
            Hidden(enc.model).eval(), example, dynamic_shapes=({0: batch, 1: length},) * 3
        )
    package = torch._inductor.aoti_compile_and_package(
        exported, package_path=str(work / "model.pt2"), inductor_configs={"freezing": True}
    )
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    runner = torch._inductor.aoti_load_package(package)
    load_s = time.perf_counter() - t0

    def forward(b: dict) -> np.ndarray:
        with torch.inference_mode():
            hidden = runner(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            return pool(hidden, b["attention_mask"], enc.pooling).numpy()

    info = {
        "aoti_build_seconds": round(build_s, 1),
        "aoti_load_seconds": round(load_s, 2),
        "aoti_package_mb": round(Path(package).stat().st_size / 2**20, 1),
    }
    return forward, info


def operator_shares(enc, batches: list[dict]) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            enc.forward(b)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in top}


def main() -> int:
    from corpusmill.engine.encoder import TransformerEncoder, default_model_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=150)
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--aoti", action="store_true")
    ap.add_argument(
        "--variants",
        default="plain_linear,small_head_attention,fp32_attention,fused_qkv",
        help="comma-separated variants to run against eager",
    )
    args = ap.parse_args()

    enc = TransformerEncoder(default_model_path(), device="cpu")
    ref = TransformerEncoder(default_model_path(), device="cpu", dtype="float32")
    name, docs = read_docs(args.docs, Path(args.corpus))
    texts = chunk_docs(name, docs, enc.tokenizer, enc.max_seq_length)
    batches = engine_batches(enc, texts.texts, 4096)
    out: dict = {"corpus": name, "tokens": texts.total_tokens, "batches": len(batches)}
    builders = {
        "small_head_attention": small_head_attention_forward,
        "fp32_attention": fp32_attention_forward,
        "fused_qkv": fused_qkv_forward,
        "plain_linear": plain_linear_forward,
    }
    variants = {"eager": enc.forward}
    variants.update({key: builders[key]() for key in args.variants.split(",") if key})
    with tempfile.TemporaryDirectory() as tmp:
        if args.aoti:
            variants["aoti"], info = aoti_forward(plain_encoder(), Path(tmp))
            out.update(info)
        reference = [ref.forward(b) for b in batches]
        for key, fn in variants.items():
            rows = [fn(b) for b in batches]  # also the warm-up pass
            out[f"{key}_worst_cosine_vs_float32"] = round(
                min(float((r * f).sum(axis=1).min()) for r, f in zip(rows, reference, strict=True)),
                6,
            )
        rates: dict[str, list[float]] = {k: [] for k in variants}
        keys = list(variants)
        for p in range(args.passes):  # order rotated each pass: no variant always goes first
            for key in keys[p % len(keys) :] + keys[: p % len(keys)]:
                fn = variants[key]
                t0 = time.perf_counter()
                for b in batches:
                    fn(b)
                rates[key].append(texts.total_tokens / (time.perf_counter() - t0))
    for key, values in rates.items():
        out[f"{key}_tokens_per_s"] = round(statistics.median(values))
        paired = [v / e for v, e in zip(values, rates["eager"], strict=True)]
        out[f"{key}_vs_eager"] = round(statistics.median(paired), 3)
    if args.profile:
        out["eager_operator_shares"] = operator_shares(enc, batches)
    for key, value in out.items():
        print(f"{key:36s} {value}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
