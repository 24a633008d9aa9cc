"""A transformer's forward pass on its device, one padded batch at a time, nothing more.

The weights are read with plain `transformers` (safetensors only, never remote code);
pooling and normalisation follow the sentence-transformers files beside the weights
(`files.describe_model`), so the vectors match what `SentenceTransformer.encode` gives.

Two kinds share this code: a bi-encoder (`kind="embedder"`, pooled sentence vectors)
and a cross-encoder (`kind="cross-encoder"`, one relevance logit per text pair).
Batching, ordering and overlap live in `corpusmill.engine`; tokenising in `tokenizer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from corpusmill.errors import ConfigError
from corpusmill.model import probe
from corpusmill.model.fast_paths import compile_model, precast_linear_weights
from corpusmill.model.files import ModelDescription, describe_model
from corpusmill.model.hardware import resolve_device, resolve_dtype
from corpusmill.model.pooling import pool, pool_packed
from corpusmill.model.tokenizer import Tokenizer

FORWARDS = ("auto", "bert_cpu", "transformers")
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

if TYPE_CHECKING:  # torch is imported lazily, at load (definitions.py must stay light)
    import torch


class TransformerEncoder:
    """Resident weights on a device. `forward` takes a padded batch of token ids and returns
    float32 numpy rows; `tokenize`, `pad_id` and `uses_token_type_ids` come from its
    `Tokenizer`, so the batch engine needs nothing else."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        kind: str = "embedder",
        device: str = "auto",
        dtype: str = "auto",
        max_seq_length: int | None = None,
        model_id: str | None = None,
        compile: bool = False,
        pack_linear: bool = True,
        description: ModelDescription | None = None,
        tokenizer: Tokenizer | None = None,
        forward: str = "auto",
        cache_dir: str = "",
        probe_threads: int = 1,
    ) -> None:
        desc = description or describe_model(
            model_path, kind, max_seq_length=max_seq_length, model_id=model_id
        )
        self.description = desc
        self.kind = desc.kind
        self.model_dir = desc.path
        self.card = desc.card
        self.pooling = desc.pooling
        self.max_seq_length = desc.max_seq_length
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.tokens = tokenizer or Tokenizer(desc, cache_dir=cache_dir)
        if forward not in FORWARDS:
            raise ConfigError(f"forward={forward!r} is not one of {FORWARDS} (CORPUSMILL_FORWARD)")
        self.compiled = bool(compile)
        self.int8_layers = 0
        self.precision: str | None = None
        self.linear_kernel = "aten"
        self.forward_path, self.forward_reason, self.probe = "transformers", "", {}
        self.packed_batches = False
        self._bert_cpu = None
        self._model = None  # Transformers' model: loaded when a path needs it (`model`)
        self._hf_options = (dtype, compile, pack_linear)

        why_not = self._bert_cpu_applies(forward, dtype, compile, pack_linear)
        if forward == "bert_cpu" and why_not:
            raise ConfigError(
                f"CORPUSMILL_FORWARD=bert_cpu cannot run this model: {why_not}; set "
                "CORPUSMILL_FORWARD=auto"
            )
        key = probe.machine_key(
            {
                "model": desc.card.revision,
                "kind": self.kind,
                "dtype": str(self.torch_dtype),
                "threads": probe_threads,
            }
        )
        cache = probe.cache_file(cache_dir, key)
        self._shapes = (cache_dir, key, probe_threads)  # where `record_kernel_shapes` keeps them
        cached = probe.read_cached(cache) if forward == "auto" and not why_not else None
        if not why_not and (forward == "bert_cpu" or (cached and cached.path == "bert_cpu")):
            # The choice is known: the packed forward straight from the files, without
            # loading (or importing) Transformers' model.
            reason = cached.reason if cached else "forced by CORPUSMILL_FORWARD=bert_cpu"
            if self._use_bert_cpu_from_folder(reason):
                self.probe = cached.measured if cached else {}
                return
        model = self._load_transformers()
        candidate = None
        if not why_not:
            from corpusmill.model.bert_cpu import BertCpuForward

            candidate = BertCpuForward.from_module(model, self.kind, self.torch_dtype)
        check = self._probe_check(candidate, model) if candidate and cached is None else None
        self._model, self.int8_layers, self.linear_kernel = self._prepare(model, *self._hf_options)
        self.precision = "int8" if self.int8_layers else None
        if candidate is None:
            self.forward_reason = why_not
        elif forward == "bert_cpu":
            self._use_bert_cpu(candidate, "forced by CORPUSMILL_FORWARD=bert_cpu")
        elif cached is not None:
            self.probe = cached.measured
            self.forward_reason = cached.reason
        else:
            assert check is not None
            choice = self._probe_speed(candidate, check, probe_threads)
            probe.write_cached(cache, choice)
            self.probe = choice.measured
            if choice.path == "bert_cpu":
                self._use_bert_cpu(candidate, choice.reason)
            else:
                self.forward_reason = choice.reason

    # -- Transformers' model ----------------------------------------------------------
    @property
    def model(self):
        """Transformers' model as the `transformers` forward runs it; loaded on first use
        when the packed forward made it unnecessary (reading it costs the modeling
        imports, ~2 s cold)."""
        if self._model is None:
            self._model, _, _ = self._prepare(self._load_transformers(), *self._hf_options)
        return self._model

    @property
    def tokenizer(self):
        """The Hugging Face tokenizer (what the chunker measures chunks with)."""
        return self.tokens.hf

    @property
    def config(self) -> dict:
        """The model's config.json."""
        import json

        return json.loads((self.model_dir / "config.json").read_text())

    def _load_transformers(self):
        """The model in float32 on its device, as Transformers reads it."""
        import torch
        import transformers

        auto_cls = (
            transformers.AutoModel
            if self.kind == "embedder"
            else transformers.AutoModelForSequenceClassification
        )
        model = auto_cls.from_pretrained(
            str(self.model_dir),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=torch.float32,
        )
        model.eval()
        model.requires_grad_(False)
        return model.to(self.device)

    def _prepare(self, model, dtype: str, compile: bool, pack_linear: bool):
        """Transformers' float32 `model` made ready to run: (model, int8 layers, Linear
        kernel)."""
        import torch

        # int8 (opt-in): the int8 kinds of Linear layer are quantised from the float32
        # weights before the rest is cast to bf16 (see int8_linear.py).
        int8_layers = 0
        if dtype == "int8":
            if compile:
                raise ConfigError(
                    "dtype='int8' runs eagerly on oneDNN's int8 ops; unset CORPUSMILL_COMPILE "
                    "or set CORPUSMILL_DTYPE=auto"
                )
            from corpusmill.model.int8_linear import quantize_bert_layers

            try:
                int8_layers = quantize_bert_layers(model)
            except RuntimeError as exc:
                raise ConfigError(
                    f"dtype='int8' cannot run {self.card.model_id}: {exc}; set "
                    "CORPUSMILL_DTYPE=auto"
                ) from exc
        # bf16/fp16 runs under autocast, which keeps LayerNorm, softmax and the residual
        # stream in float32 (casting the whole model instead drifts to cosine 0.99990 of
        # float32, autocast stays at 0.99996). Autocast re-casts every float32 weight on
        # every forward: the profiler showed those copies at ~45% of CPU time. So the
        # Linear layers (the only weights autocast casts) are cast once here: same values
        # autocast would compute, same numerics, no per-batch copies.
        if self.torch_dtype != torch.float32:
            precast_linear_weights(model, self.torch_dtype)
        # On a CPU, run those Linear layers on weights packed once for oneDNN (see
        # packed_linear.py). A compiled model packs its own.
        kernel = "aten"
        if pack_linear and not compile and self.device == "cpu":
            from corpusmill.model.packed_linear import pack_linear_layers

            if pack_linear_layers(model):
                kernel = "onednn_packed"
        if compile:
            model = compile_model(model)
        return model, int8_layers, kernel

    # -- which forward (model/probe.py) ---------------------------------------------
    def _bert_cpu_applies(self, forward: str, dtype: str, compile: bool, pack: bool) -> str:
        """Why the packed BERT forward cannot run here ('' when it can), from the
        settings and the model's config.json alone."""

        if forward == "transformers":
            return "forced by CORPUSMILL_FORWARD=transformers"
        if self.device != "cpu":
            return f"bert_cpu is a CPU forward; the device is {self.device}"
        if dtype == "int8" or compile:
            return "int8 and torch.compile run Transformers' forward"
        if not pack:
            return "CORPUSMILL_PACK_LINEAR=0: Transformers' forward on plain F.linear"
        from corpusmill.model import bert_cpu

        why = bert_cpu.supported(self.config, self.kind, self.torch_dtype)
        return f"bert_cpu does not apply: {why}" if why else ""

    def _use_bert_cpu_from_folder(self, reason: str) -> bool:
        """The packed forward built from the folder's files; False when they do not hold
        what it needs (Transformers' loader knows more checkpoint layouts: it is used)."""
        from corpusmill.model.bert_cpu import BertCpuForward

        try:
            forward = BertCpuForward.from_folder(self.model_dir, self.kind, self.torch_dtype)
        except (KeyError, ValueError, OSError):
            return False
        self._use_bert_cpu(forward, reason)
        return True

    def _probe_batches(self) -> tuple[list, list]:
        """Token lists for the check (real sentences) and for the speed probe."""
        from corpusmill.model.probe import CHECK_TEXTS, SPEED_TOKENS

        texts: list = list(CHECK_TEXTS)
        if self.kind == "cross-encoder":
            texts = [(texts[i], texts[-1 - i]) for i in range(len(texts))]
        check = self.tokenize(texts)
        # ~16 sequences of ~128 tokens: 100 words of the same prose, shifted (for a
        # cross-encoder, a 20-word query and an 80-word passage, as rerank scores them)
        words = " ".join(CHECK_TEXTS * 8).split()
        rows = max(1, SPEED_TOKENS // 128)
        spans = [words[7 * i : 7 * i + 100] for i in range(rows)]
        if self.kind == "cross-encoder":
            speed = self.tokenize([(" ".join(w[:20]), " ".join(w[20:])) for w in spans])
        else:
            speed = self.tokenize([" ".join(w) for w in spans])
        return check, speed

    def _probe_check(self, candidate, model) -> dict:
        """Step 1 of the probe, on the float32 model (before its Linear layers are cast):
        the candidate's rows against float32's on `CHECK_TEXTS`."""
        from corpusmill.engine.inputs import collate

        check, speed = self._probe_batches()
        reference = self._rows(collate(check, self.pad_id), None, model)
        worst = probe.worst_cosine(self._packed_rows(candidate, check), reference)
        return {"worst_cosine": worst, "check": check, "speed": speed}

    def _probe_speed(self, candidate, check: dict, threads: int) -> probe.Choice:
        """Step 2: both forwards timed on the speed batch; `probe.pick` keeps one."""
        from corpusmill.engine.inputs import collate

        worst = check["worst_cosine"]
        measured: dict = {"worst_cosine_to_float32": round(worst, 6)}
        if worst < probe.MIN_COSINE:
            reason = (
                f"probe: bert_cpu moved a vector to cosine {worst:.5f} of float32 "
                f"(< {probe.MIN_COSINE}); Transformers' forward kept"
            )
            return probe.Choice("transformers", reason, measured)
        speed = check["speed"]
        padded = collate(speed, self.pad_id)
        seconds = probe.time_paths(
            {
                "bert_cpu": lambda: self._packed_rows(candidate, speed),
                "transformers": lambda: self._rows(padded, self._autocast()),
            },
            threads,
        )
        tokens = sum(len(t["input_ids"]) for t in speed)
        tps = {name: round(tokens / s) for name, s in seconds.items()}
        measured.update({"tokens_per_s": tps, "threads": threads, "tokens": tokens})
        path = probe.pick(tps)
        ratio = tps["bert_cpu"] / tps["transformers"]
        reason = (
            f"probe: bert_cpu {tps['bert_cpu']:,} against transformers "
            f"{tps['transformers']:,} tokens/s ({ratio:.2f}x) on {tokens} tokens, "
            f"{threads} thread(s), worst cosine to float32 {worst:.5f}"
        )
        if path == "bert_cpu" and ratio < 1:
            reason += f"; within the {probe.TRANSFORMERS_MARGIN:.2f}x margin, bert_cpu kept"
        return probe.Choice(path, reason, measured)

    def _use_bert_cpu(self, candidate, reason: str) -> None:
        self._bert_cpu = candidate
        self.linear_kernel = "onednn_packed"
        self.packed_batches = True
        self.forward_path, self.forward_reason = "bert_cpu", reason

    def record_kernel_shapes(self) -> None:
        """Keep the product shapes the packed forward ran, for the warm run server to build
        before it forks the next run (model/kernel_shapes.py)."""
        if self._bert_cpu is None:
            return
        from corpusmill.model import kernel_shapes

        cache_dir, key, threads = self._shapes
        kernel_shapes.record(
            cache_dir,
            key,
            model_dir=self.model_dir,
            kind=self.kind,
            dtype=str(self.torch_dtype).removeprefix("torch."),
            threads=threads,
            rows=self._bert_cpu.seen_rows,
            attention=self._bert_cpu.seen_attention,
        )

    def _packed_rows(self, candidate, token_lists: list) -> np.ndarray:
        from corpusmill.engine.inputs import collate_packed

        batch = collate_packed(token_lists)
        hidden = candidate(batch)
        if self.kind == "cross-encoder":
            return candidate.logits(hidden, batch).numpy()
        return pool_packed(hidden, batch["lengths"], self.pooling).numpy()

    def _rows(self, batch: dict, autocast, model=None) -> np.ndarray:
        """Transformers' forward (`model`, else this encoder's) on a padded batch, under
        `autocast` (None: as loaded)."""
        import contextlib

        import torch

        inputs = {k: v for k, v in batch.items() if k in _MODEL_INPUTS}
        with torch.inference_mode(), autocast or contextlib.nullcontext():
            out = (self.model if model is None else model)(**inputs)
            if self.kind == "cross-encoder":
                return out.logits.float().numpy()
            return pool(out.last_hidden_state, inputs["attention_mask"], self.pooling).numpy()

    # -- what the batch engine reads --------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.tokens.pad_id

    @property
    def uses_token_type_ids(self) -> bool:
        return self.tokens.uses_token_type_ids

    @property
    def tokenizer_id(self) -> str:
        return self.tokens.fingerprint

    def tokenize(self, texts) -> list[dict[str, list[int]]]:
        return self.tokens.tokenize(texts)

    def collate(self, token_lists: list) -> dict:
        """One batch as `forward` takes it: packed rows for the packed forward, else padded
        (what the engine does for this encoder; for callers that batch by hand)."""
        from corpusmill.engine.inputs import collate, collate_packed

        if self.packed_batches:
            return collate_packed(token_lists)
        return collate(token_lists, self.pad_id, self.device == "cuda")

    def packed_rows(self, tokens: int) -> int:
        """The rows the packed forward computes for a batch of `tokens` tokens (a few zero
        rows added: `bert_cpu.padded_rows`), which the engine counts as padding."""
        from corpusmill.model.bert_cpu import padded_rows

        return padded_rows(tokens)

    @property
    def dtype_name(self) -> str:
        """The precision lineage records: `int8` for the int8 path (its other layers run
        in bf16), else the torch dtype's name."""
        return self.precision or str(self.torch_dtype).removeprefix("torch.")

    # -- forward (device) -------------------------------------------------------------
    def _autocast(self):
        import contextlib

        import torch

        if self.torch_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.torch_dtype)

    def forward(self, batch: dict) -> np.ndarray:
        """Run one padded batch (tensors from `runner.collate`) and return float32 rows."""
        return self._device_rows(batch).cpu().numpy()

    def launch(self, batch: dict) -> np.ndarray | PendingRows:
        """`forward` without waiting for the device: on CUDA, queue the batch's kernels and
        a copy of its rows into pinned memory, and return at once (`PendingRows.wait()`
        gives the rows). The engine launches the next batch while the GPU still runs this
        one, instead of leaving it idle while Python prepares each launch. Elsewhere the
        rows themselves, as `forward` gives them."""
        import torch

        if self.device != "cuda":
            return self.forward(batch)
        with torch.inference_mode():
            rows = self._device_rows(batch)
            host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
            host.copy_(rows, non_blocking=True)
        # The event follows the copy on the same stream; `rows` may be freed now, since
        # the allocator reuses its memory only for work queued after the copy.
        done = torch.cuda.Event()
        done.record()
        return PendingRows(host, done)

    def _device_rows(self, batch: dict):
        import torch

        if self._bert_cpu is not None:  # a packed batch (engine/inputs.collate_packed)
            hidden = self._bert_cpu(batch)
            if self.kind == "cross-encoder":
                return self._bert_cpu.logits(hidden, batch)
            return pool_packed(hidden, batch["lengths"], self.pooling)

        inputs = {
            k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k in _MODEL_INPUTS
        }
        with torch.inference_mode(), self._autocast():
            out = self.model(**inputs)
            if self.kind == "cross-encoder":
                return out.logits.float()
            return pool(out.last_hidden_state, inputs["attention_mask"], self.pooling)


@dataclass
class PendingRows:
    """Rows on their way from the GPU: a pinned host buffer and the event after its copy."""

    host: torch.Tensor  # pinned
    done: torch.cuda.Event  # recorded after the copy

    def wait(self) -> np.ndarray:
        self.done.synchronize()
        return self.host.numpy()
