"""A BERT encoder's forward pass written for the engine's batches on a CPU, in bf16 (or
float32 on a CPU without bf16 instructions).

Transformers' BERT, run eagerly on a CPU in bf16, spends its time like this (MiniLM-L6,
SciFact chunks, one thread, `python -m bench.engine_profile`): Linear layers ~50%, SDPA's
flash kernel ~36% (with 32-wide heads its blocked loop makes many tiny products and does
~10x less work per second than the Linear layers), GELU ~7%, casts, LayerNorm and residual
adds ~6%. This forward keeps the same arithmetic and removes what is not arithmetic:

- **Packed rows.** A batch arrives as its sequences' tokens end to end
  (`engine.inputs.collate_packed`: ids, positions, lengths); every Linear, LayerNorm and
  GELU runs on the real tokens and at most 1/32 as many zero rows (`padded_rows`: fewer
  shapes for oneDNN to build kernels for), and attention runs per sequence with no mask.
- **Attention as two bf16 batched products and a softmax per run of equal lengths**, cut
  into groups of heads whose scores stay in cache (`SCORES_PER_GROUP`). The scores are
  rounded to bf16 once (the softmax itself runs in float32 inside the kernel); the 1/sqrt(d)
  scale is folded into the query weights at load. Worst cosine to float32 over SciFact
  chunks 0.99997, as with SDPA.
- **Q, K and V in one product**, and GELU as a post-op of the up-projection, on weights
  packed once for oneDNN (as `packed_linear.py` does for Transformers' layers).
- **Precision as autocast keeps it**: the residual stream and LayerNorm stay float32, every
  product takes bf16 inputs with float32 accumulation. (The residual stream in bf16, as a
  model cast whole to bf16 runs, was no faster here and moved the worst vector to 0.99992.)
- **In float32** (a CPU without AVX512-BF16 or AMX, where `dtype=auto` resolves to float32)
  the same forward, every product in float32: Transformers' fp32 forward runs its Linear
  layers on plain `F.linear` and pads, this one packs weights and rows. On an AVX2 machine
  (AMD EPYC family 25, 2 cores) three load-time probes measured it at 1.07-1.30x
  Transformers' float32 forward on one thread, at cosine 1.00000; it also loads from the
  folder without importing Transformers' modeling code (~4 s of a cold run there).

It is used only where it reproduces Transformers' own model: a BERT encoder (`model_type`
"bert", absolute positions, exact GELU, not a decoder), embedder or sequence classifier, on
a CPU whose oneDNN runs the dtype; `supported` says why not otherwise. At load the encoder
checks it against the float32 model on a probe batch (`model/probe.py`) before using it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from corpusmill.model.numpy_forward import find_tensor, unsupported
from corpusmill.model.packed_linear import ROWS_HINT

# Scores (heads x len x len) per attention group: 256k bf16 scores (512 kB) stay in a
# core's L2 with their float32 softmax. A whole 4k-token batch at once (~20 MB of scores)
# ran 15% slower; 128k-512k were within 2% of each other (single thread, SciFact chunks).
SCORES_PER_GROUP = 1 << 18

# oneDNN builds a kernel (a "primitive") for each new product shape and keeps 1,024 of them.
# A packed batch's row count is the sum of its sequences' lengths, a new number almost every
# batch: a 375k-token pass of MiniLM built 212 Linear kernels (~6.5 ms each on the AMX
# machine, 1.4 s of a ~19 s pass), and the attention's ~850 shapes then pushed them out, so
# the next pass built them again. Rows are padded up to a multiple of 1/32 of their power of
# two (of 64 between 2,048 and 4,096 rows): 32 row counts per doubling, at most 1/32 more
# rows, none added below 64 (a query's batch).
ROW_STEP_SHIFT = 5


def padded_rows(rows: int) -> int:
    """The row count a batch of `rows` tokens runs its products at."""
    step = 1 << max(0, rows.bit_length() - 1 - ROW_STEP_SHIFT)
    return -(-rows // step) * step


def supported(config: Mapping[str, Any], kind: str, dtype: torch.dtype) -> str:
    """Why this forward cannot stand in for the model `config` (config.json) describes
    ('' when it can): a BERT encoder as `numpy_forward.unsupported` reads one, on a CPU whose
    oneDNN runs `dtype`."""
    from corpusmill.model import packed_linear

    why = unsupported(config, kind)
    if why:
        return why
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return f"no packed forward in {dtype}"
    if not packed_linear.supported(dtype):
        return f"oneDNN cannot run {dtype} products on this CPU"
    return ""


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors files, float32, by name, without
    Transformers (a cold process that embeds a query imports neither its modeling code nor
    its configuration machinery: about 2 s on the 2-core machine)."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in load_file(str(file)).items():
            weights[name] = tensor.float() if tensor.is_floating_point() else tensor
    return weights


@dataclass(frozen=True)
class _Linear:
    weight: torch.Tensor  # packed for oneDNN
    bias: torch.Tensor | None

    @classmethod
    def pack(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), ROWS_HINT)
        return cls(packed, None if bias is None else bias.detach().to(dtype))

    def __call__(self, x: torch.Tensor, post: str = "none") -> torch.Tensor:
        # "gelu" with algorithm "none" is the exact (erf) GELU, as nn.GELU()
        algorithm = "none" if post == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, post, [], algorithm)


@dataclass(frozen=True)
class _Layer:
    qkv: _Linear
    out: _Linear
    norm1: tuple[torch.Tensor, torch.Tensor, float]
    up: _Linear
    down: _Linear
    norm2: tuple[torch.Tensor, torch.Tensor, float]


class _Weights:
    """Named float32 tensors as a checkpoint holds them (`numpy_forward.find_tensor`)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __call__(self, name: str) -> torch.Tensor:
        return find_tensor(self.tensors, name).detach().float()

    def norm(self, prefix: str, eps: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        return self(f"{prefix}.weight"), self(f"{prefix}.bias"), eps


class BertCpuForward:
    """The forward of a BERT encoder on packed batches, built from its config.json values
    and its float32 tensors by name (`from_module`: a loaded Transformers model;
    `from_folder`: the files, no Transformers). `__call__(batch)` returns the last hidden
    state of every token, float32, (tokens, hidden); `logits(hidden, batch)` the sequence
    classifier's, for a cross-encoder."""

    def __init__(
        self,
        config: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        kind: str = "embedder",
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        why = supported(config, kind, dtype)
        if why:
            raise ValueError(why)
        w = _Weights(tensors)
        eps = float(config.get("layer_norm_eps", 1e-12))
        self.dtype = dtype
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.head_dim = self.hidden // self.heads
        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")
        self.norm0 = w.norm("embeddings.LayerNorm", eps)
        scale = self.head_dim**-0.5
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            at = f"encoder.layer.{i}.attention"
            qkv = [w(f"{at}.self.{n}.weight") for n in ("query", "key", "value")]
            qkv_bias = [w(f"{at}.self.{n}.bias") for n in ("query", "key", "value")]
            qkv[0], qkv_bias[0] = qkv[0] * scale, qkv_bias[0] * scale
            ffn = f"encoder.layer.{i}"
            self.layers.append(
                _Layer(
                    qkv=_Linear.pack(torch.cat(qkv), torch.cat(qkv_bias), dtype),
                    out=_Linear.pack(
                        w(f"{at}.output.dense.weight"), w(f"{at}.output.dense.bias"), dtype
                    ),
                    norm1=w.norm(f"{at}.output.LayerNorm", eps),
                    up=_Linear.pack(
                        w(f"{ffn}.intermediate.dense.weight"),
                        w(f"{ffn}.intermediate.dense.bias"),
                        dtype,
                    ),
                    down=_Linear.pack(
                        w(f"{ffn}.output.dense.weight"), w(f"{ffn}.output.dense.bias"), dtype
                    ),
                    norm2=w.norm(f"{ffn}.output.LayerNorm", eps),
                )
            )
        # The product shapes this forward has run (`kernel_shapes`): Linear row counts and
        # attention groups (heads, length). Two CPU streams add to them at once: a set's
        # add is atomic in CPython.
        self.seen_rows: set[int] = set()
        self.seen_attention: set[tuple[int, int]] = set()
        self.classifier = None
        if kind == "cross-encoder":
            self.classifier = (
                w("pooler.dense.weight"),
                w("pooler.dense.bias"),
                w("classifier.weight"),
                w("classifier.bias"),
            )

    @classmethod
    def from_module(cls, model: Any, kind: str, dtype: torch.dtype) -> BertCpuForward:
        """From a loaded (float32) Transformers model; the model is not kept."""
        config = model.config.to_dict()
        config.setdefault("architectures", [type(model).__name__])
        return cls(config, dict(model.state_dict()), kind, dtype)

    @classmethod
    def from_folder(cls, model_dir: Path, kind: str, dtype: torch.dtype) -> BertCpuForward:
        """From the folder's config.json and safetensors files, without Transformers."""
        config = json.loads((model_dir / "config.json").read_text())
        return cls(config, read_weights(model_dir), kind, dtype)

    @torch.inference_mode()
    def __call__(self, batch: dict) -> torch.Tensor:
        lengths = batch["lengths"].tolist()
        types = batch.get("token_type_ids")
        x = self.word[batch["input_ids"]] + self.position[batch["position_ids"]]
        x = x + (self.token_type[0] if types is None else self.token_type[types])
        x = _layer_norm(x, self.norm0)
        tokens, rows = x.shape[0], padded_rows(x.shape[0])
        self.seen_rows.add(rows)
        if rows > tokens:
            x = F.pad(x, (0, 0, 0, rows - tokens))  # zero rows, never attended
        runs = _runs(lengths)
        for layer in self.layers:
            mixed = self._attention(layer.qkv(x.to(self.dtype)), runs)
            x = _layer_norm(x + layer.out(mixed), layer.norm1)
            up = layer.up(x.to(self.dtype), "gelu")
            x = _layer_norm(x + layer.down(up), layer.norm2)
        return x[:tokens]

    def _attention(self, qkv: torch.Tensor, runs: list[tuple[int, int, int]]) -> torch.Tensor:
        """Per run of `count` sequences of equal `length` starting at row `start`:
        softmax(q k^T) v per head (the scale is in q), in groups of heads whose scores fit
        `SCORES_PER_GROUP`; (tokens, 3 * hidden) in, (tokens, hidden) out."""
        heads, dim = self.heads, self.head_dim
        out = torch.empty(qkv.shape[0], self.hidden, dtype=qkv.dtype)
        out[sum(count * length for _, count, length in runs) :] = 0  # the padding rows
        for start, count, length in runs:
            rows = qkv[start : start + count * length].view(count, length, 3, heads, dim)
            n = count * heads
            q = rows[:, :, 0].transpose(1, 2).reshape(n, length, dim)
            k = rows[:, :, 1].permute(0, 2, 3, 1).reshape(n, dim, length)
            v = rows[:, :, 2].transpose(1, 2).reshape(n, length, dim)
            mixed = torch.empty(n, length, dim, dtype=qkv.dtype)
            group = max(1, SCORES_PER_GROUP // (length * length))
            for g in range(0, n, group):
                self.seen_attention.add((min(group, n - g), length))
                _attend(q[g : g + group], k[g : g + group], v[g : g + group], mixed[g : g + group])
            block = out[start : start + count * length].view(count, length, heads, dim)
            block.copy_(mixed.view(count, heads, length, dim).transpose(1, 2))
        return out

    @torch.inference_mode()
    def warm(self, rows: Iterable[int], attention: Iterable[tuple[int, int]]) -> int:
        """Run every product at these shapes once, on zeros: Linear layers at `rows` rows,
        attention groups of `attention` (heads, length). oneDNN builds a kernel the first
        time it sees a shape (`ROW_STEP_SHIFT`), so a forward at shapes warmed here builds
        none. Every layer has the same shapes: the first layer's products stand for all.
        Returns the number of products run."""
        layer, dim, done = self.layers[0], self.head_dim, 0
        for n in rows:
            x = torch.zeros(n, self.hidden, dtype=self.dtype)
            layer.qkv(x)
            layer.out(x)
            layer.down(layer.up(x, "gelu"))
            done += 4
        for heads, length in attention:
            q = torch.zeros(heads, length, dim, dtype=self.dtype)
            k = torch.zeros(heads, dim, length, dtype=self.dtype)
            _attend(q, k, q, torch.empty_like(q))
            done += 2
        return done

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """The sequence classifier's logits from each sequence's first token, float32."""
        assert self.classifier is not None
        w1, b1, w2, b2 = self.classifier
        first = hidden[_starts(batch["lengths"])]
        return F.linear(torch.tanh(F.linear(first, w1, b1)), w2, b2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
    """softmax(q k) v into `out`, for a group of heads: q and v (heads, length, dim), k
    (heads, dim, length), all contiguous (`warm` runs the same calls)."""
    torch.bmm(torch.softmax(torch.bmm(q, k), -1), v, out=out)


def _layer_norm(x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor, float]) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), norm[0], norm[1], norm[2])


def _runs(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(first row, count, length) for each run of consecutive sequences of equal length
    (the engine sorts a window by length, so most of a batch is a few runs)."""
    runs: list[list[int]] = []
    start = 0
    for length in lengths:
        if runs and runs[-1][2] == length:
            runs[-1][1] += 1
        else:
            runs.append([start, 1, length])
        start += length
    return [(a, b, c) for a, b, c in runs]


def _starts(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(lengths, 0) - lengths
