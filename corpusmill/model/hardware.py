"""Which device and precision a model runs on: `auto` resolved against the hardware."""

from __future__ import annotations

import os
from pathlib import Path

from corpusmill.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")


def cpu_supports_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX, where bf16 matmul is native and fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_supports_int8() -> bool:
    """True on x86 CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


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
    """The torch dtype the model computes in. `auto` picks bf16 where the hardware runs it
    natively, fp16 on older GPUs, else fp32. `int8` (opt-in, CPU) is bf16 for everything
    but the int8 Linear layers (model/int8_linear.py) and needs VNNI or AMX.

    On these AMX CPUs bf16 is ~2x faster for MiniLM and stays within cosine 0.9999 of
    float32 (tests/unit/test_precision.py, docs/BENCHMARKS.md).
    """
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not one of {DTYPES} (set CORPUSMILL_DTYPE)")
    if dtype == "int8":
        check_int8(device)
        return torch.bfloat16
    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def check_int8(device: str) -> None:
    """Refuse `dtype=int8` where it cannot run fast: it is a CPU path for int8 dot-product
    instructions, on oneDNN's int8 ops."""
    if device != "cpu":
        raise ConfigError(
            f"dtype='int8' runs on the CPU only (device is {device!r}); set "
            "CORPUSMILL_DEVICE=cpu or CORPUSMILL_DTYPE=auto"
        )
    if not cpu_supports_int8():
        raise ConfigError(
            "dtype='int8' needs a CPU with AVX512-VNNI, AVX-VNNI or AMX (none in "
            "/proc/cpuinfo); set CORPUSMILL_DTYPE=auto"
        )
    from corpusmill.model.int8_linear import supported

    if not supported():
        raise ConfigError(
            "dtype='int8' needs oneDNN's int8 linear ops (torch.ops.onednn.qlinear_pointwise), "
            "which this torch lacks; set CORPUSMILL_DTYPE=auto"
        )


def dtype_label(dtype: str, device: str) -> str:
    """What lineage records as the precision: `int8`, or the resolved torch dtype's name."""
    if dtype == "int8":
        return "int8"
    return str(resolve_dtype(dtype, device)).removeprefix("torch.")


def default_batch_tokens(device: str) -> int:
    """Measured on MiniLM-L6: 4k padded tokens per batch keeps a 2-core CPU's caches warm;
    a GPU needs wide batches to fill its SMs."""
    return 32768 if device == "cuda" else 4096


def default_window(device: str) -> int:
    """Inputs the engine reads, sorts by length and plans at once; the sink hears of a
    window's rows when the whole window is done, and the embeddings step commits a group of
    documents only then. On a GPU 4,096 chunks is ~0.7 s of forward. On the 2-core CPU it
    was ~30 s, so a 375k-token ingest (2,288 chunks, one window) committed every group
    after its last forward: 512 there (~6 s of forward each)."""
    return 4096 if device == "cuda" else 512


def default_tokenize_threads(device: str) -> int:
    """One tokenising thread feeds MiniLM-L6 at ~0.3M tokens/s while an H100's forward pass
    takes ~1M (docs/BENCHMARKS.md, `make bench-gpu`), so on CUDA the engine tokenises on
    several threads. On a CPU the model needs every core and tokenising is ~5% of the work,
    so one thread."""
    if device != "cuda":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) - 2))


def cpu_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_cpu_streams(device: str, threads: int) -> tuple[int, int]:
    """(forward streams, intra-op threads per stream) for `threads` torch threads
    (engine/streams.py). On a CPU, one stream per thread, up to 8 (measured on 2 cores:
    MiniLM-L6 1.2-1.9x one batch over both threads, docs/BENCHMARKS.md); past 8 the threads
    are shared out between 8 streams (not measured: no such machine at hand). On CUDA one
    stream: the main thread launches every batch."""
    if device != "cpu" or threads <= 1:
        return 1, max(1, threads)
    streams = min(threads, 8)
    return streams, max(1, threads // streams)
