"""The Ray path with N = 1, 2, 4, 8, 16 STAND-IN workers: scaling, host cost, driver memory,
kill and replay. `make bench-scale` (inside a private network namespace: Ray on loopback).

STAND-IN DEVICE (bench/stand_in.py): each worker's forward sleeps for the time a device
at `--rate` tokens/s would take for the unit's tokens, releasing the CPU; everything else
is the real Ray path: planning from ids, shipping work units, the workers reading their
chunks from Lance, the per-chunk rules, fragment writes, the keyed commits, Ray itself.

One local Ray cluster (this process) and, per measurement, a fresh driver process that
joins it (so each driver's peak RSS is its own), against a fresh local Lance store:

- scaling: N workers, N x `--units-per-worker` units of `--batch-rows` chunks of
  `--tokens` stored token ids (weak scaling: the same work per worker); tokens/s from when
  every actor is up to the last commit; efficiency = tokens/s(N) / (N x tokens/s(1));
  host CPU-seconds (utime + stime of the driver, Ray's processes and the workers, from
  /proc, over the same window) per million tokens; commit seconds; driver peak RSS;
- driver memory: the driver's peak RSS (VmHWM) for runs of 10k and 1M synthetic chunks
  (8-word texts, the stand-in with no sleep: the driver's cost, not the device's);
- kill and replay: 8 workers; trials that SIGKILL one worker process at a random moment,
  and trials that SIGKILL the driver at a random moment, then replay every slice commit
  it had begun (each that had landed must be skipped) and rerun it with the same run key.
  After every trial each chunk is in `embeddings` exactly once.

Prints one JSON line per measurement and, last, the summary JSON; `--out` writes it.

    python -m tools.netns -- .venv/bin/python -m bench.scale_out [--quick] [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLK = os.sysconf("SC_CLK_TCK")


# -- host accounting ------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: utime + stime + reaped children's) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK
    return ppid, cpu


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of `root` and every process below it, per pid."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid][1]
            todo += children.get(pid, [])
    return out


def tree_pids(root: int, needle: str) -> list[int]:
    """Processes below `root` whose command line holds `needle` (Ray names an actor's
    process after its class)."""
    pids = []
    for pid in tree_cpu(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmd:
            pids.append(pid)
    return pids


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the driver (a child process) -----------------------------------------------------------
def driver(args: argparse.Namespace) -> None:
    """One run of `sync_embeddings_on_ray` with stand-in workers, as a fresh process that
    joins the cluster; prints its figures as JSON."""
    from bench.stand_in import CARD, TOKENIZER, stand_in
    from corpusmill.config import prepare_process
    from corpusmill.ids import ALL_PARTITIONS
    from corpusmill.model import ModelSpec
    from corpusmill.scale.cluster import ray_cluster
    from corpusmill.scale.ray_embed import ray_pool, sync_embeddings_on_ray
    from corpusmill.store import Store

    prepare_process()
    store: Store = Store(args.db)
    if args.journal:
        store = _journaled(store, args.journal)
    marks: dict[str, object] = {}

    def ready() -> None:
        marks["ready"] = time.perf_counter()
        marks["cpu"] = tree_cpu(args.root)
        if args.ready_file:
            Path(args.ready_file).write_text(str(os.getpid()))

    env = {"env_vars": {"PYTHONPATH": str(ROOT)}}
    with ray_cluster(args.address, runtime_env=env):
        pool = ray_pool(args.workers, gpu=False, on_ready=ready)
        report, stats = sync_embeddings_on_ray(
            store,
            ModelSpec(),
            CARD,
            ALL_PARTITIONS,
            run_key=args.run_key,
            workers=args.workers,
            tokenizer_id=TOKENIZER,
            batch_rows=args.batch_rows,
            worker=stand_in(args.rate),
            map_units=pool,
            **({"slice_chunks": args.slice_chunks} if args.slice_chunks else {}),
        )
        end = time.perf_counter()
        after = tree_cpu(args.root)
    before = marks.get("cpu") or {}
    assert isinstance(before, dict)
    cpu = sum(c - before.get(pid, 0.0) for pid, c in after.items())
    seconds = end - float(marks.get("ready", end))  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "chunks_embedded": report.chunks_embedded,
                "tokens": stats.tokens,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(stats.tokens / seconds, 1) if seconds else 0.0,
                "host_cpu_s": round(cpu, 2),
                "commit_seconds": round(stats.commit.seconds, 3) if stats.commit else 0.0,
                "commits": stats.commits,
                "commits_skipped": stats.commits_skipped,
                "slices": stats.slices,
                "units": stats.units,
                "worker_processes": stats.worker_processes,
                "driver_peak_rss_mb": round(peak_rss_mb(), 1),
            }
        ),
        flush=True,
    )


def _journaled(store, path: str):
    """The store, with each slice commit's arguments written to `path` before it is made:
    what a driver that retries its commits would keep, so this benchmark can replay them."""
    from corpusmill.store import Store

    class JournaledStore(Store):
        def commit_fragments(self, name, fragments, delete_where, run_key, read_version):
            entry = [name, list(fragments), delete_where, run_key, read_version]
            with open(path, "a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return super().commit_fragments(name, fragments, delete_where, run_key, read_version)

    return JournaledStore(store.uri)


def _driver_argv(address, db, workers, rate, run_key, **extra) -> list[str]:
    argv = [sys.executable, "-m", "bench.scale_out", "--driver", "--address", address]
    argv += ["--db", db, "--workers", str(workers), "--rate", str(rate), "--run-key", run_key]
    argv += ["--root", str(os.getpid())]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def run_driver(*argv_parts, **extra) -> dict:
    proc = subprocess.run(
        _driver_argv(*argv_parts, **extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"driver failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- checks -------------------------------------------------------------------------------
def exactly_once(db: str) -> dict:
    from corpusmill.store import Store

    store = Store(db)
    want = set(store.scan("chunks", ["chunk_id"])["chunk_id"].to_pylist())
    have = Counter(store.scan("embeddings", ["chunk_id"])["chunk_id"].to_pylist())
    return {
        "chunks": len(want),
        "rows": sum(have.values()),
        "exactly_once": set(have) == want and set(have.values()) <= {1},
    }


# -- the measurements -----------------------------------------------------------------------
def scaling(address: str, work: Path, args) -> list[dict]:
    from bench.stand_in import fill_chunks
    from corpusmill.store import Store

    rows = []
    for n in args.workers:
        db = str(work / f"scale-{n}")
        chunks = n * args.units_per_worker * args.batch_rows
        fill_chunks(Store(db), chunks, tokens=args.tokens)
        r = run_driver(address, db, n, args.rate, f"scale-{n}", batch_rows=args.batch_rows)
        r.update(workers=n, **exactly_once(db))
        print(json.dumps({"measurement": "scaling", **r}), flush=True)
        rows.append(r)
    one = next((r for r in rows if r["workers"] == 1), rows[0])
    base = one["tokens_per_s"] / one["workers"]
    for r in rows:
        r["efficiency"] = round(r["tokens_per_s"] / (r["workers"] * base), 3)
        r["host_cpu_s_per_mtok"] = round(r["host_cpu_s"] / (r["tokens"] / 1e6), 2)
    return rows


def driver_memory(
    address: str, work: Path, sizes: list[int], workers: int, batch_rows: int
) -> dict:
    from bench.stand_in import fill_chunks
    from corpusmill.store import Store

    out = {}
    for n in sizes:
        db = str(work / f"memory-{n}")
        fill_chunks(Store(db), n)
        r = run_driver(address, db, workers, 0, f"memory-{n}", batch_rows=batch_rows)
        r.update(**exactly_once(db))
        print(json.dumps({"measurement": "driver-memory", **r}), flush=True)
        out[str(n)] = r
    return out


def kill_trials(address: str, work: Path, args, victim: str) -> list[dict]:
    """`victim` "worker": SIGKILL one stand-in worker process at a random moment; the run
    must finish. "driver": SIGKILL the driver at a random moment; replay every slice commit
    it began, then rerun it with the same run key."""
    from bench.stand_in import fill_chunks
    from corpusmill.store import Store

    rng = random.Random(args.seed + (0 if victim == "worker" else 1))
    trials = []
    for t in range(args.trials):
        db = str(work / f"kill-{victim}-{t}")
        fill_chunks(Store(db), args.kill_chunks, tokens=args.tokens)
        journal, ready = work / f"journal-{victim}-{t}", work / f"ready-{victim}-{t}"
        # The run, as the killed driver and its rerun (same run key) both make it.
        run = (address, db, 8, args.rate, f"kill-{victim}-{t}")
        plan = {"batch_rows": args.batch_rows, "slice_chunks": args.kill_slice_chunks}
        argv = _driver_argv(*run, **plan, journal=journal, ready_file=ready)
        child = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 300
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the driver's ready file, with a deadline
        at = rng.uniform(0.0, args.kill_window)
        time.sleep(at)  # the random moment of the kill (not a wait for a result)
        killed = None
        if child.poll() is None:
            if victim == "worker":
                pids = tree_pids(os.getpid(), "StandIn")
                if pids:
                    killed = rng.choice(pids)
                    os.kill(killed, signal.SIGKILL)
            else:
                killed = child.pid
                child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=1800)
        trial = {"victim": victim, "trial": t, "kill_after_s": round(at, 2), "killed": bool(killed)}
        if victim == "worker":
            if child.returncode != 0:
                raise RuntimeError(f"driver failed after a worker kill: {err[-3000:]}")
            trial["worker_processes"] = json.loads(out.strip().splitlines()[-1])["worker_processes"]
        else:
            trial.update(replay(db, journal))
            rerun = run_driver(*run, **plan)
            trial["rerun_commits"] = rerun["commits"]
        trial.update(exactly_once(db))
        print(json.dumps({"measurement": "kill", **trial}), flush=True)
        trials.append(trial)
    return trials


def replay(db: str, journal: Path) -> dict:
    """Replay every slice commit the killed driver began: one that had landed must be
    skipped (its run key is found), one that had not lands now (its fragments are files)."""
    import lance

    from corpusmill.store import Store
    from corpusmill.store.fragments import committed_run_keys

    store = Store(db)
    lines = journal.read_text().splitlines() if journal.exists() else []
    landed = skipped = 0
    for name, fragments, delete_where, run_key, read_version in map(json.loads, lines):
        had = run_key in committed_run_keys(lance.dataset(store.table_uri(name)), read_version)
        result = store.commit_fragments(name, fragments, delete_where, run_key, read_version)
        if had and result.committed:
            raise AssertionError(f"a replayed commit of {run_key} landed twice")
        landed += had
        skipped += had and not result.committed
    return {"commits_begun": len(lines), "commits_landed": landed, "replays_skipped": skipped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--address", default="")
    ap.add_argument("--db", default="")
    ap.add_argument("--root", type=int, default=0)
    ap.add_argument("--run-key", default="")
    ap.add_argument("--journal", default="")
    ap.add_argument("--ready-file", default="")
    ap.add_argument("--slice-chunks", type=int, default=0, help="0: the driver's default")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--rate", type=float, default=5000.0, help="stand-in tokens/s per worker")
    ap.add_argument("--tokens", type=int, default=256, help="stored token ids per chunk")
    ap.add_argument("--batch-rows", type=int, default=64, help="chunks per work unit")
    ap.add_argument("--units-per-worker", type=int, default=8)
    ap.add_argument("--memory-chunks", default="10000,1000000")
    ap.add_argument(
        "--memory-batch-rows",
        type=int,
        default=256,  # corpusmill.scale.ray_embed.BATCH_ROWS: the plan a user's run makes
        help="chunks per work unit in the driver-memory runs (64: four times the fragments)",
    )
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--kill-chunks", type=int, default=2048)
    ap.add_argument("--kill-slice-chunks", type=int, default=512, help="several slice commits")
    ap.add_argument("--kill-window", type=float, default=12.0, help="seconds after ready")
    ap.add_argument("--seed", type=int, default=28)
    ap.add_argument(
        "--skip", default="", help="comma list of: scaling,memory,kill,kill-workers,kill-driver"
    )
    ap.add_argument("--quick", action="store_true", help="N=1,4; 10k/100k; 2 trials")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.driver:
        args.workers = int(args.workers)
        driver(args)
        return 0
    if args.quick:
        args.workers, args.memory_chunks, args.trials = "1,4", "10000,100000", 2
    args.workers = [int(w) for w in args.workers.split(",")]
    skip = set(args.skip.split(","))

    import ray

    from corpusmill.scale.cluster import ray_cluster

    summary: dict = {
        "stand_in": "STAND-IN DEVICE: sleeps tokens/rate per unit; all else real",
        "stand_in_tokens_per_s_per_worker": args.rate,
        "tokens_per_chunk": args.tokens,
        "batch_rows": args.batch_rows,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
    }
    t0 = time.perf_counter()
    # Logical CPUs for Ray's accounting only: each actor asks half of one (actor_resources).
    logical = max(8, max(args.workers) // 2 + 2)
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp, ray_cluster(num_cpus=logical):
        address = ray.get_runtime_context().gcs_address
        work = Path(tmp)
        if "scaling" not in skip:
            summary["rows"] = scaling(address, work, args)
        if "memory" not in skip:
            sizes = [int(x) for x in args.memory_chunks.split(",")]
            memory = driver_memory(
                address, work, sizes, workers=8, batch_rows=args.memory_batch_rows
            )
            summary["driver_rss_mb_by_chunks"] = {
                k: v["driver_peak_rss_mb"] for k, v in memory.items()
            }
            summary["driver_memory_runs"] = memory
        if not {"kill", "kill-workers"} & skip:
            summary["kill_workers"] = kill_trials(address, work, args, "worker")
        if not {"kill", "kill-driver"} & skip:
            summary["kill_driver"] = kill_trials(address, work, args, "driver")
    summary["rows"] = [
        {
            k: r[k]
            for k in (
                "workers",
                "efficiency",
                "host_cpu_s_per_mtok",
                "commit_seconds",
                "driver_peak_rss_mb",
                "tokens_per_s",
                "tokens",
                "seconds",
                "host_cpu_s",
                "commits",
                "exactly_once",
            )
        }
        for r in summary.get("rows", [])
    ]
    summary["load_average_at_end"] = os.getloadavg()[0]
    summary["bench_seconds"] = round(time.perf_counter() - t0, 1)
    return print_summary(summary, args.out)


def print_summary(summary: dict, out: str) -> int:
    """The summary as the last line printed (and into `out`, indented, if given)."""
    if out:
        Path(out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
