"""Which forward a model runs on this machine: a short probe at load, cached per machine and
model.

Where two forwards compute the same vectors (Transformers' own, and `bert_cpu`'s packed
one), which is faster depends on the CPU (AVX512-BF16, AMX, VNNI), on torch's kernels for
it and on the model's shapes. So, the first time a model loads on a machine, the encoder:

1. checks the candidate against the float32 model on a few real sentences (`CHECK_TEXTS`):
   every vector at cosine >= `MIN_COSINE`, or the candidate is not used;
2. times both on the same batch (`SPEED_TOKENS` tokens) the way the engine runs them (on
   a thread with the engine's intra-op thread count per stream), alternating, best of
   `ROUNDS` after one warm-up pass each, in the thread's CPU time when it has one thread;
3. keeps `bert_cpu` unless Transformers' forward is faster by `TRANSFORMERS_MARGIN`
   (`pick`), and writes what it measured to `<cache_dir>/forward-probe/<key>.json`,
   the key being the CPU (model name, its bf16/AMX/VNNI flags, cores), torch's version, the
   model's weights fingerprint, kind and dtype, the thread count and `PROBE_VERSION`.

A later load with the same key reads the file and skips both steps (milliseconds). The
choice and its reason go into the run's lineage (`Model.lineage`: `forward_path`,
`forward_reason`); `CORPUSMILL_FORWARD` forces a path. Without a cache folder the probe
runs at every load (about a second for MiniLM-L6 on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROBE_VERSION = 2  # 2: the margin below (a choice cached by version 1 is probed again)
MIN_COSINE = 0.9999  # against float32, per vector: the engine's own bar for bf16 (tests)
SPEED_TOKENS = 2048
ROUNDS = 5
# Transformers' forward is kept only when it is this much faster than `bert_cpu`. Closer
# than that the two are within the probe's own spread (five probes of the same pair on the
# AMX machine gave bert_cpu 0.96x-1.18x), and a tie should not be a coin flip: `bert_cpu`
# loads from the folder without importing Transformers' modeling code, which every cold
# process would pay otherwise (a cold `corpusmill search` 4.1 s against 6.9-8.4 s there).
TRANSFORMERS_MARGIN = 1.10

# Ordinary prose of a few lengths, for the check; the speed batch cuts the joined text into
# sequences of 128 tokens.
CHECK_TEXTS = (
    "Probe.",
    "The river rose overnight and closed the lower road to traffic.",
    "A committee reviewed the budget, found two errors in the totals, and asked the office "
    "to resubmit the figures before the end of the month.",
    "Photosynthesis converts light energy into chemical energy: chlorophyll absorbs mostly "
    "blue and red light, water is split, oxygen is released, and the energy is stored in "
    "sugars that the plant uses to grow. In dim light the rate is limited by the light "
    "itself; in bright light by carbon dioxide and temperature.",
    "Error handling in a program separates the ordinary path from the unusual one. A "
    "function that cannot do its job raises an exception, and a caller that knows what to "
    "do about it catches it; everyone in between stays out of the way. Resources such as "
    "files and locks are released on every path, which is what context managers are for. "
    "Logging an error and carrying on is rarely right: either handle it, or let it travel "
    "to someone who can, with enough context to understand what went wrong and where.",
)


@dataclass
class Choice:
    path: str  # the forward used
    reason: str  # why, in words (lineage)
    measured: dict[str, Any] = field(default_factory=dict)  # what the probe found


def machine_key(extra: dict[str, Any]) -> str:
    """A key for this CPU, torch and `extra` (the model's identity and run settings)."""
    import torch

    cpu, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni", "avx512f")
    parts = {
        "cpu": cpu,
        "flags": sorted(f for f in flags if f in wanted),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        "torch": torch.__version__,
        "probe": PROBE_VERSION,
        **extra,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def record_file(cache_dir: str, namespace: str, key: str) -> Path | None:
    """Where a probe keeps what it found under `key` (None: no cache folder)."""
    return Path(cache_dir).expanduser() / namespace / f"{key}.json" if cache_dir else None


def read_record(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: probe again and overwrite it
    return data if isinstance(data, dict) else None


def write_record(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs the probe next time


def pick(tokens_per_s: dict[str, int]) -> str:
    """The forward to keep from the probe's speeds (`bert_cpu`, `transformers`)."""
    if tokens_per_s["transformers"] >= TRANSFORMERS_MARGIN * tokens_per_s["bert_cpu"]:
        return "transformers"
    return "bert_cpu"


def cache_file(cache_dir: str, key: str) -> Path | None:
    return record_file(cache_dir, "forward-probe", key)


def read_cached(path: Path | None) -> Choice | None:
    data = read_record(path)
    try:
        return None if data is None else Choice(data["path"], data["reason"], data["measured"])
    except KeyError:
        return None


def write_cached(path: Path | None, choice: Choice) -> None:
    write_record(path, {"path": choice.path, "reason": choice.reason, "measured": choice.measured})


def worst_cosine(rows: np.ndarray, reference: np.ndarray) -> float:
    """The smallest cosine between matching rows; -1 when a row is finite in one and not
    the other (a poisoned input must fail the same way in both)."""
    rows, reference = np.asarray(rows, np.float64), np.asarray(reference, np.float64)
    ok_rows, ok_ref = np.isfinite(rows).all(1), np.isfinite(reference).all(1)
    if rows.shape != reference.shape or not np.array_equal(ok_rows, ok_ref):
        return -1.0
    if not ok_ref.any():
        return 1.0
    a, b = rows[ok_ref], reference[ok_ref]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return float(cos.min())


def time_paths(
    forwards: dict[str, Callable[[], object]], threads: int, rounds: int = ROUNDS
) -> dict[str, float]:
    """Seconds per call of each forward, best of `rounds` after a warm-up, alternating, on
    a thread with `threads` intra-op threads (what one of the engine's streams sees).

    With one thread the clock is the thread's own CPU time: other work on the machine
    (the 2-core machine is often shared) then slows neither forward's figure, where wall
    time picked the slower forward once at load average 5. With more threads, wall time."""
    from corpusmill.engine import streams

    clock = time.thread_time if threads == 1 else time.perf_counter

    def measure() -> dict[str, float]:
        best = {name: float("inf") for name in forwards}
        for fn in forwards.values():
            fn()
        for r in range(rounds):
            names = list(forwards) if r % 2 == 0 else list(reversed(forwards))
            for name in names:
                t0 = clock()
                forwards[name]()
                best[name] = min(best[name], clock() - t0)
        return best

    result = streams.run_on_thread(threads, measure)
    assert isinstance(result, dict)
    return result
