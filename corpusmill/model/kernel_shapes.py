"""The product shapes a packed forward ran, kept per machine and model so that the warm
run server can build their oneDNN kernels before it forks a run.

oneDNN builds a kernel the first time a process runs a product at a new shape (about 6.5 ms
for a Linear layer, 1-1.5 ms for an attention product on the AMX machine) and keeps it for
that process. Every run is a new process forked from the warm run server
(dagster_corpusmill/launcher.py), so every run's embed stage used to build all of them
again: ~900 kernels, about a CPU-second in a 1,000-document run. A kernel built in the
server before it forks is in every run it forks. So each run records the shapes its
forward ran (`record`, when the run releases its model), and the server runs each
recorded shape once at start (`warm_recorded`).

The server must not start a thread (a fork copies a thread's memory, not the thread), and
torch runs an op on more than one thread by starting OpenMP's. A kernel is built for the
number of threads it runs on, and the engine's CPU streams run one thread each on the
2-core machines (engine/streams.py): the server warms on one thread, which starts none, and
shapes recorded with more threads per stream are not warmed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corpusmill.model import probe

NAMESPACE = "kernel-shapes"
VERSION = 1
# oneDNN keeps 1,024 kernels per process (ONEDNN_PRIMITIVE_CACHE_CAPACITY) and drops the
# least recently used: the server warms at most 7/8 of that, leaving room for a run's new
# shapes without pushing the warmed ones out.
WARM_PRODUCTS = 896
_PRODUCTS_PER_ROWS = 4  # Q/K/V, attention output, up, down
_PRODUCTS_PER_ATTENTION = 2  # scores, then scores times values


def record(
    cache_dir: str,
    key: str,
    *,
    model_dir: Path,
    kind: str,
    dtype: str,
    threads: int,
    rows: Iterable[int],
    attention: Iterable[tuple[int, int]],
) -> None:
    """Add a forward's shapes to what is recorded under `key` (the probe's key: machine,
    model, dtype, threads), this run's first, then the earlier runs' not seen again, up to
    `WARM_PRODUCTS` products."""
    path = probe.record_file(cache_dir, NAMESPACE, key)
    if path is None:
        return
    new_rows, new_attention = sorted(set(rows)), sorted(set(attention))
    if not new_rows and not new_attention:
        return
    # Two runs ending at once each write what they read: the last one's record stands, and
    # the other's shapes are built by the runs that meet them again.
    old = probe.read_record(path) or {}
    rows_now, attention_now = set(new_rows), set(new_attention)
    kept_rows = new_rows + [r for r in old.get("rows", []) if r not in rows_now]
    kept_attention = new_attention + [
        (h, n) for h, n in map(tuple, old.get("attention", [])) if (h, n) not in attention_now
    ]
    kept_rows, kept_attention = _within(kept_rows, kept_attention, WARM_PRODUCTS)
    probe.write_record(
        path,
        {
            "version": VERSION,
            "machine": probe.machine_key({}),
            "model_dir": str(model_dir),
            "kind": kind,
            "dtype": dtype,
            "threads": threads,
            "rows": kept_rows,
            "attention": [list(a) for a in kept_attention],
            "recorded_at": time.time(),
        },
    )


def _within(
    rows: list[int], attention: list[tuple[int, int]], budget: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """The first entries of each list that fit `budget` products, Linear row counts first
    (a Linear kernel takes ~5x as long to build as an attention product's)."""
    rows = rows[: budget // _PRODUCTS_PER_ROWS]
    left = budget - _PRODUCTS_PER_ROWS * len(rows)
    return rows, attention[: left // _PRODUCTS_PER_ATTENTION]


def recorded(cache_dir: str) -> list[dict[str, Any]]:
    """This machine's records that the server can warm (one thread per stream), the most
    recent first."""
    folder = Path(cache_dir).expanduser() / NAMESPACE if cache_dir else None
    if folder is None or not folder.is_dir():
        return []
    machine = probe.machine_key({})
    records = [probe.read_record(p) for p in folder.glob("*.json")]
    usable = [
        r
        for r in records
        if r
        and r.get("version") == VERSION
        and r.get("machine") == machine
        and r.get("threads") == 1
    ]
    return sorted(usable, key=lambda r: -float(r.get("recorded_at", 0)))


def warm_recorded(cache_dir: str) -> int:
    """Run every recorded shape of this machine once, on one thread, within
    `WARM_PRODUCTS` products in all; returns how many products ran. A record whose model
    folder is gone or cannot be read is passed over."""
    import torch

    from corpusmill.model.bert_cpu import BertCpuForward

    budget, done = WARM_PRODUCTS, 0
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # builds kernels for one thread and starts no OpenMP thread
    try:
        for rec in recorded(cache_dir):
            rows, attention = _within(
                [int(r) for r in rec.get("rows", [])],
                [(int(h), int(n)) for h, n in rec.get("attention", [])],
                budget,
            )
            if not rows and not attention:
                break
            try:
                forward = BertCpuForward.from_folder(
                    Path(rec["model_dir"]), rec["kind"], getattr(torch, rec["dtype"])
                )
            except Exception:  # noqa: BLE001 (a model moved or deleted since: nothing to warm)
                continue
            ran = forward.warm(rows, attention)
            done, budget = done + ran, budget - ran
    finally:
        torch.set_num_threads(before)
    return done
