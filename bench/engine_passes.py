"""The engine alone over the same chunks twice in a fresh process: the first pass is what a
run sees (every product shape new to oneDNN, which builds a kernel for each), the second what
a process that has already seen them gets. With `--against DIR` (another checkout, e.g. a
`git worktree` of an earlier commit) the two checkouts run alternately, a fresh process
each, and the paired ratios are printed.

`--warm-server` alternates the checkout with itself after importing what the warm run server
imports last (`dagster_corpusmill.warm_kernels`: the kernels of the shapes earlier runs
recorded under `CORPUSMILL_CACHE_DIR`), so its first pass is what a run forked from that
server sees.

`--kernel-builds` runs each process with `ONEDNN_VERBOSE=profile_create` and counts the
kernels oneDNN builds (cache misses) by kind, for the load and each pass
(`kernels_built`); the logging slows the passes, so their times are not comparable then.

    .venv/bin/python -m bench.engine_passes [--docs 1000] [--runs 3] [--against DIR]
    .venv/bin/python -m bench.engine_passes --runs 1 --kernel-builds
    .venv/bin/python -m bench.engine_passes --runs 3 --warm-server [--kernel-builds]

Prints one line per process and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.corpus_texts import SCIFACT, chunk_docs, read_docs

REPO = Path(__file__).resolve().parent.parent


MARK = "@@engine_passes "  # printed after the load and each pass, between oneDNN's lines


def passes(docs: int, corpus: Path, warm_server: bool = False) -> dict:
    """In this process: load the configured embedder, chunk `docs` documents as an ingest
    does, and time two passes of the engine over them (wall and CPU seconds). `warm_server`:
    first build the recorded kernels, as the warm run server does before it forks a run."""
    from corpusmill.config import Settings
    from corpusmill.model import Model

    warmed = {}
    if warm_server:
        import dagster_corpusmill.warm_kernels as server

        warmed = {"server_products": server.products, "server_seconds": server.seconds}
        mark("server")
    model = Model(Settings.from_env().embedder_spec()).load()
    _, documents = read_docs(docs, corpus)
    texts = chunk_docs("scifact", documents, model.tokenizer, model.max_seq_length).texts
    out: dict = {"texts": len(texts), "forward_path": model.lineage()["forward_path"], **warmed}
    mark("load")
    for name in ("first", "second"):
        cpu, wall = time.process_time(), time.perf_counter()
        _, stats = model.encode(texts)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        mark(name)
        out["tokens"] = stats.real_tokens
        out[f"{name}_pass_s"] = round(wall, 2)
        out[f"{name}_pass_cpu_s"] = round(cpu, 1)
    return out


def mark(segment: str) -> None:
    """End a segment of stdout: oneDNN's verbose lines (C stdio) flushed before the mark."""
    import ctypes

    ctypes.CDLL(None).fflush(None)
    print(MARK + segment, flush=True)


def kernels_built(stdout: str) -> dict[str, dict[str, int]]:
    """oneDNN's `create:cache_miss` lines per segment (load, first, second) and kind."""
    built: dict[str, dict[str, int]] = {}
    pending: dict[str, int] = {}
    for line in stdout.splitlines():
        if line.startswith(MARK):
            built[line.removeprefix(MARK)] = pending
            pending = {}
        elif "create:cache_miss" in line:
            kind = line.split("create:cache_miss,")[1].split(",")[1]  # after the engine, cpu
            pending[kind] = pending.get(kind, 0) + 1
    return built


def fresh(
    checkout: Path, docs: int, corpus: Path, count_builds: bool, warm_server: bool = False
) -> dict:
    """`passes` in a fresh process of `checkout` (its own venv python, its own code)."""
    python = str(checkout / ".venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable
    argv = [python, "-m", "bench.engine_passes", "--child", "--docs", str(docs)]
    argv += ["--warm-server"] if warm_server else []
    env = {**os.environ, **({"ONEDNN_VERBOSE": "profile_create"} if count_builds else {})}
    done = subprocess.run(
        [*argv, "--corpus", str(corpus)], cwd=checkout, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if count_builds:
        result["kernels_built"] = kernels_built(done.stdout)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per checkout")
    ap.add_argument("--corpus", type=Path, default=SCIFACT)
    ap.add_argument("--against", type=Path, help="another checkout to pair this one with")
    ap.add_argument(
        "--kernel-builds", action="store_true", help="count oneDNN's kernel builds per pass"
    )
    ap.add_argument(
        "--warm-server",
        action="store_true",
        help="pair this checkout with itself after the run server's kernel warm-up",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(passes(args.docs, args.corpus, args.warm_server)))
        return 0
    # name -> (checkout, whether the process first warms as the run server does)
    checkouts = {"this": (REPO, False)}
    if args.against:
        checkouts["against"] = (args.against.resolve(), False)
    elif args.warm_server:
        checkouts["against"] = (REPO, True)
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    for i in range(args.runs):
        for name in checkouts if i % 2 == 0 else list(reversed(checkouts)):
            path, warm = checkouts[name]
            runs[name].append(fresh(path, args.docs, args.corpus, args.kernel_builds, warm))
            r = runs[name][-1]
            print(
                f"{name}: {r['tokens']:,} tokens, first pass {r['first_pass_s']} s, "
                f"second {r['second_pass_s']} s ({r['forward_path']})"
                + (f"; kernels built {r['kernels_built']}" if args.kernel_builds else ""),
                flush=True,
            )
    summary: dict = {"docs": args.docs, "runs": runs, "load_avg_1m": os.getloadavg()[0]}
    for name, rows in runs.items():
        for which in ("first", "second"):
            summary[f"{name}_{which}_pass_median_s"] = statistics.median(
                r[f"{which}_pass_s"] for r in rows
            )
    if "against" in checkouts:
        path, warm = checkouts["against"]
        summary["against"] = f"{path} after the run server's warm-up" if warm else str(path)
        for which in ("first", "second"):
            key = f"{which}_pass_s"
            ratios = [a[key] / t[key] for t, a in zip(runs["this"], runs["against"], strict=True)]
            summary[f"{which}_pass_speedup"] = sorted(round(x, 3) for x in ratios)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
