"""File drop -> searchable, with the real daemon: p50 and p95 over N drops.

A real `dagster-daemon` (tests/e2e/daemon_harness.py: its own DAGSTER_HOME, inbox and
LanceDB folder, processes found and stopped by session id) watches an inbox with the
inbox sensor at `--interval` seconds, with the default model and settings (the packaged
MiniLM, dtype auto, chunks of 200 tokens). One SciFact abstract at a time is written into
the inbox (atomically: a temporary name, then a rename), at a random moment of the sensor's
cycle (a uniform pause of 0..interval seconds after the previous one became searchable);
the clock runs from the rename until the document's rows are committed to `embeddings`
(polled every 0.1 s: the next search reads the latest commit, so the document is then
searchable). Each drop's run is read back from the instance for the phases: drop to
run created (the sensor's tick), created to started (queue and launch of a run process),
started to searchable (the run: imports, model load, the three steps).

    .venv/bin/python -m bench.drop_to_search [--drops 20] [--interval 5] [--launcher default]

`--launcher default` takes the `run_launcher` block out of the daemon's dagster.yaml, so
each run is a fresh process (Dagster's default) instead of a fork of the warm run server.

Prints one line per drop and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from bench.corpus_texts import SCIFACT


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drops", type=int, default=20)
    ap.add_argument("--interval", type=int, default=5, help="CORPUSMILL_SENSOR_INTERVAL")
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument("--timeout", type=float, default=180, help="seconds per drop at most")
    ap.add_argument(
        "--launcher",
        choices=("warm", "default"),
        default="warm",
        help="warm: dagster.yaml as it is (dagster_corpusmill.launcher); default: Dagster's own",
    )
    args = ap.parse_args(argv)

    from corpusmill.model.files import default_model_path
    from tests.e2e.daemon_harness import InboxDaemon, wait_for

    with open(args.corpus) as fh:
        records = [json.loads(next(fh)) for _ in range(args.drops)]
    rng = random.Random(25)
    work = Path(tempfile.mkdtemp(prefix="drop-to-search-"))
    daemon = InboxDaemon(work, default_model_path(), interval=args.interval)
    # The real defaults, not the e2e tests' tiny chunks and float32.
    for key in ("CORPUSMILL_DTYPE", "CORPUSMILL_CHUNK_TOKENS", "CORPUSMILL_CHUNK_OVERLAP"):
        daemon.env.pop(key, None)
    daemon.env["CORPUSMILL_MODEL"] = ""  # the packaged default
    if args.launcher == "default":
        config = yaml.safe_load((daemon.home / "dagster.yaml").read_text())
        del config["run_launcher"]
        (daemon.home / "dagster.yaml").write_text(yaml.safe_dump(config))
    rows: list[dict] = []
    with daemon:
        for i, rec in enumerate(records):
            time.sleep(rng.uniform(0, args.interval))
            name = f"doc-{i:03d}-{rec['_id']}.txt"
            t0 = time.time()
            path = daemon.write(name, f"{rec.get('title', '')}\n\n{rec['text']}")
            wait_for(
                lambda path=path: committed(daemon.db, str(path)),
                args.timeout,
                f"drop {i} in embeddings\n{daemon.log_tail()}",
                every=0.1,
            )
            seconds = time.time() - t0
            rows.append({"drop": i, "seconds": round(seconds, 2), **_phases(daemon, t0)})
            print(json.dumps(rows[-1]), flush=True)
    values = [r["seconds"] for r in rows]
    summary = {
        "drops": len(rows),
        "sensor_interval_s": args.interval,
        "launcher": args.launcher,
        "p50_s": round(statistics.median(values), 2),
        "p95_s": round(percentile(values, 0.95), 2),
        "min_s": min(values),
        "max_s": max(values),
        "phase_medians_s": {
            k: round(statistics.median(r[k] for r in rows if k in r), 2)
            for k in ("tick_s", "queue_and_launch_s", "run_s")
            if any(k in r for r in rows)
        },
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))
    return 0


def committed(db: str, uri: str) -> bool:
    """The file's rows are in the latest commit of `embeddings`."""
    from corpusmill.store import Store
    from corpusmill.store.predicates import eq_filter

    try:
        return Store(db).count("embeddings", eq_filter("uri", uri)) > 0
    except Exception:  # noqa: BLE001 (no table yet: the first run has not committed)
        return False


def _phases(daemon, t0: float) -> dict:
    """The latest run's creation, start and end against the drop (epoch seconds)."""
    runs = daemon.runs()
    if not runs:
        return {}
    latest = max(runs, key=lambda r: r.create_timestamp.timestamp())
    out = {"tick_s": round(latest.create_timestamp.timestamp() - t0, 2)}
    if latest.start_time:
        out["queue_and_launch_s"] = round(
            latest.start_time - latest.create_timestamp.timestamp(), 2
        )
        out["run_s"] = round((latest.end_time or time.time()) - latest.start_time, 2)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
