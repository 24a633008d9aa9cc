"""A BERT embedder's forward in NumPy, for the few texts of a query in a process without torch.

A cold `corpusmill search` embeds one query of a few tokens. Through the engine that costs
`import torch` first (2.1-3.3 s on the 2-core machines: more than everything else the search
does) and packing the weights for oneDNN. This forward reads the same safetensors files with
`safetensors.numpy` and runs Transformers' `BertModel` arithmetic in float32 NumPy, one
sequence at a time (no padding, no mask), then pools as sentence-transformers does. Float32
throughout: it computes the reference the engine's bf16 vectors are held to (cosine >= 0.9999
in the tests), so a query vector from here is at least as close to the model as the engine's.

It reads a model exactly when `bert_cpu` does (`unsupported`: a BERT encoder, absolute
positions, exact GELU), with the same tensor names. `Model.embed_queries` decides when it is
used (model/model.py); everything else, and any process whose weights are resident, goes
through the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from corpusmill.model.card import PoolingSpec
from corpusmill.model.files import ModelDescription


def unsupported(config: Mapping[str, Any], kind: str) -> str:
    """Why `config` (config.json) is not a BERT encoder these forwards reproduce ('' when it
    is): `model_type` "bert" with absolute positions and exact GELU, not a decoder, read as
    Transformers' `BertModel` (embedder) or `BertForSequenceClassification` (cross-encoder)."""
    if config.get("model_type") != "bert":
        return f"not a BERT model (model_type {config.get('model_type')!r})"
    if config.get("position_embedding_type", "absolute") not in (None, "absolute"):
        return f"position_embedding_type={config['position_embedding_type']}"
    if config.get("hidden_act") != "gelu":
        return f"hidden_act={config.get('hidden_act')}"
    if config.get("is_decoder") or config.get("add_cross_attention"):
        return "a decoder"
    architectures = config.get("architectures") or ["BertModel"]
    if kind == "cross-encoder" and architectures[0] != "BertForSequenceClassification":
        return f"a cross-encoder read as {architectures[0]}, not BertForSequenceClassification"
    return ""


def find_tensor(tensors: Mapping[str, Any], name: str) -> Any:
    """The BERT tensor `name` as a checkpoint holds it: with or without the `bert.` prefix of
    a task model, LayerNorm as weight/bias or as the older gamma/beta."""
    for candidate in (name, f"bert.{name}"):
        for alias in (candidate, candidate.replace(".weight", ".gamma").replace(".bias", ".beta")):
            if alias in tensors:
                return tensors[alias]
    raise KeyError(f"the checkpoint has no tensor {name!r}")


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26): NumPy has none, and the exact
    GELU needs it; the error is below float32's own rounding of the activations."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x * np.float32(2**-0.5)))).astype(np.float32)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


class NumpyBertEmbedder:
    """The float32 forward and pooling of a BERT embedder, from its config.json values and its
    tensors by name (`from_description`: the folder's safetensors, read without torch)."""

    def __init__(
        self, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], pooling: PoolingSpec
    ) -> None:
        why = unsupported(config, "embedder")
        if why:
            raise ValueError(why)
        if pooling.mode not in ("mean", "cls", "max", "lasttoken"):
            raise ValueError(f"no pooling {pooling.mode!r}")

        def w(name: str) -> np.ndarray:
            return np.asarray(find_tensor(tensors, name), dtype=np.float32)

        def linear(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            # Transposed once: rows @ weight.T is rows @ this.
            return np.ascontiguousarray(w(f"{prefix}.weight").T), w(f"{prefix}.bias")

        def norm(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            return w(f"{prefix}.weight"), w(f"{prefix}.bias")

        self.pooling = pooling
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.heads = int(config["num_attention_heads"])
        self.head_dim = int(config["hidden_size"]) // self.heads
        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")
        self.norm0 = norm("embeddings.LayerNorm")
        scale = np.float32(self.head_dim**-0.5)
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            at, ffn = f"encoder.layer.{i}.attention", f"encoder.layer.{i}"
            qkv = [w(f"{at}.self.{n}.weight") for n in ("query", "key", "value")]
            qkv_bias = [w(f"{at}.self.{n}.bias") for n in ("query", "key", "value")]
            qkv[0], qkv_bias[0] = qkv[0] * scale, qkv_bias[0] * scale
            self.layers.append(
                (
                    (np.ascontiguousarray(np.concatenate(qkv).T), np.concatenate(qkv_bias)),
                    linear(f"{at}.output.dense"),
                    norm(f"{at}.output.LayerNorm"),
                    linear(f"{ffn}.intermediate.dense"),
                    linear(f"{ffn}.output.dense"),
                    norm(f"{ffn}.output.LayerNorm"),
                )
            )

    @classmethod
    def from_description(
        cls, desc: ModelDescription, pooling: PoolingSpec | None = None
    ) -> NumpyBertEmbedder:
        """From the folder `desc` describes: its config and pooling (or `pooling`), and its
        safetensors files (float16 or float32; NumPy has no bfloat16, so a bf16 checkpoint
        raises here and the engine embeds instead)."""
        from safetensors.numpy import load_file

        tensors: dict[str, np.ndarray] = {}
        for file in sorted(desc.path.glob("*.safetensors")):
            tensors.update(load_file(str(file)))
        return cls(desc.config, tensors, pooling or desc.pooling)

    def hidden(self, ids: Sequence[int], types: Sequence[int] | None = None) -> np.ndarray:
        """The last hidden state of each token of one sequence, (tokens, hidden) float32."""
        n = len(ids)
        type_rows = self.token_type[0] if types is None else self.token_type[np.asarray(types)]
        x = self.word[np.asarray(ids)] + self.position[:n] + type_rows
        x = _layer_norm(x, *self.norm0, self.eps)
        heads, dim = self.heads, self.head_dim
        for qkv, out, norm1, up, down, norm2 in self.layers:
            q, k, v = (x @ qkv[0] + qkv[1]).reshape(n, 3, heads, dim).transpose(1, 2, 0, 3)
            scores = q @ k.transpose(0, 2, 1)  # (heads, n, n); the scale is in q
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            mixed = (scores @ v).transpose(1, 0, 2).reshape(n, heads * dim)
            x = _layer_norm(x + mixed @ out[0] + out[1], *norm1, self.eps)
            x = _layer_norm(x + _gelu(x @ up[0] + up[1]) @ down[0] + down[1], *norm2, self.eps)
        return x

    def embed(self, items: Sequence[Mapping[str, Sequence[int]]]) -> np.ndarray:
        """One pooled (and, where the model says so, normalised) float32 vector per tokenised
        text (`Tokenizer.tokenize`'s dicts), in order."""
        rows = []
        for item in items:
            hidden = self.hidden(item["input_ids"], item.get("token_type_ids"))
            mode = self.pooling.mode
            if mode == "cls":
                row = hidden[0]
            elif mode == "lasttoken":
                row = hidden[-1]
            elif mode == "max":
                row = hidden.max(0)
            else:
                row = hidden.mean(0)
            if self.pooling.normalize:
                row = row / max(float(np.linalg.norm(row)), 1e-12)
            rows.append(row)
        return np.stack(rows).astype(np.float32)
