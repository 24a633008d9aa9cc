"""A cold `corpusmill search`: wall time from the shell to the hits, in fresh processes.

Ingests the first `--docs` SciFact documents into a scratch store once, then runs
`.venv/bin/corpusmill search QUERY --k 5 --json` `--runs` times, each a new process (the
median is what a person typing a query waits), after one run that fills the forward
probe's cache in a scratch cache folder (`CORPUSMILL_CACHE_DIR`): that first run on a
machine is reported apart (`first_on_machine_s`). Per run: wall seconds, user+system CPU
seconds and peak RSS of the child (`/usr/bin/time` style, from `resource.getrusage`), and
whether it imported Transformers and torch (`-X importtime`, the last run).

`--against DIR` pairs this checkout with another one (a `git worktree` of an earlier
commit, sharing this `.venv`): `--runs` more cold searches of each, alternated, on the same
store and cache, each as `python -m app.cli` from its own checkout, after one untimed search
each (an earlier checkout may probe its forward first) (`paired` in the JSON).

    .venv/bin/python -m bench.cold_search [--runs 5] [--docs 200] [--against DIR]

Prints one line per run and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.corpus_texts import SCIFACT

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / ".venv" / "bin" / "corpusmill"


def timed(argv: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float, float]:
    """(wall s, user+system CPU s, peak RSS MB) of one child process (its own rusage, from
    `os.wait4`)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(err.decode(errors="replace")[-2000:])
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument("--query", default="how do cells divide")
    ap.add_argument("--against", type=Path, help="another checkout to pair this one with")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="cold-search-"))
    corpus = work / "corpus.jsonl"
    with open(args.corpus) as src:
        corpus.write_text("".join(next(src) for _ in range(args.docs)))
    env = {
        **os.environ,
        "CORPUSMILL_DB": str(work / "db"),
        "CORPUSMILL_CACHE_DIR": str(work / "cache"),
    }
    env.pop("DAGSTER_HOME", None)
    subprocess.run(
        [str(CLI), "ingest", "--json", str(corpus)], env=env, check=True, capture_output=True
    )
    # The ingest filled the cache already; a first search on a machine probes: emptied here.
    for sub in (work / "cache").glob("*"):
        for f in sub.glob("*"):
            f.unlink()
    search = [str(CLI), "search", args.query, "--k", "5", "--json"]
    first, *_ = timed(search, env)
    runs = []
    for i in range(args.runs):
        wall, cpu, rss = timed(search, env)
        runs.append({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rss_mb": round(rss)})
        print(f"run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    paired = pair(args.against, search[1:], env, args.runs) if args.against else None
    traced = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-X",
            "importtime",
            "-P",
            "-m",
            "app.cli",
            *search[1:],
        ],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    modules = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if "|" in line}
    walls = [r["wall_s"] for r in runs]
    print(
        json.dumps(
            {
                "cold_search_wall_s": {
                    "median": round(statistics.median(walls), 2),
                    "min": min(walls),
                    "max": max(walls),
                    "n": len(walls),
                },
                "cold_search_cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 2),
                "peak_rss_mb_max": max(r["rss_mb"] for r in runs),
                "first_on_machine_s": round(first, 2),
                "imports_transformers": "transformers" in modules,
                "imports_torch": "torch" in modules,
                "docs": args.docs,
                "load_avg_1m": round(os.getloadavg()[0], 2),
                **({"paired": paired} if paired else {}),
            }
        )
    )
    return 0


def pair(other: Path, argv: list[str], env: dict, runs: int) -> dict:
    """Cold searches from this checkout and `other`, alternated: wall s, peak RSS MB."""
    python = str(REPO / ".venv" / "bin" / "python")
    checkouts = {"this": REPO, "against": other.resolve()}
    walls: dict[str, list[float]] = {name: [] for name in checkouts}
    rss: dict[str, float] = dict.fromkeys(checkouts, 0.0)
    for cwd in checkouts.values():  # each one's first search on the machine (its probe), untimed
        timed([python, "-m", "app.cli", *argv], env, cwd)
    for i in range(runs):
        for name in checkouts if i % 2 == 0 else reversed(checkouts):
            wall, _cpu, peak = timed([python, "-m", "app.cli", *argv], env, checkouts[name])
            walls[name].append(round(wall, 2))
            rss[name] = max(rss[name], round(peak))
        print(f"pair {i + 1}: this {walls['this'][-1]} s, against {walls['against'][-1]} s")
    return {
        "against": str(checkouts["against"]),
        **{f"{name}_wall_s": sorted(w) for name, w in walls.items()},
        **{f"{name}_median_s": statistics.median(w) for name, w in walls.items()},
        **{f"{name}_rss_mb_max": rss[name] for name in checkouts},
    }


if __name__ == "__main__":
    raise SystemExit(main())
