"""The engine alone over the same chunks twice in a fresh process: the first pass is what a
run sees (every product shape new to oneDNN, which builds a kernel for each), the second what
a process that has already seen them gets. With `--against DIR` (another checkout, e.g. a
`git worktree` of an earlier commit) the two checkouts run alternately, a fresh process
each, and the paired ratios are printed.

    .venv/bin/python -m bench.engine_passes [--docs 1000] [--runs 3] [--against DIR]

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


def passes(docs: int, corpus: Path) -> dict:
    """In this process: load the configured embedder, chunk `docs` documents as an ingest
    does, and time two passes of the engine over them (wall and CPU seconds)."""
    from corpusmill.config import Settings
    from corpusmill.model import Model

    model = Model(Settings.from_env().embedder_spec()).load()
    _, documents = read_docs(docs, corpus)
    texts = chunk_docs("scifact", documents, model.tokenizer, model.max_seq_length).texts
    out: dict = {"texts": len(texts), "forward_path": model.lineage()["forward_path"]}
    for name in ("first", "second"):
        cpu, wall = time.process_time(), time.perf_counter()
        _, stats = model.encode(texts)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out["tokens"] = stats.real_tokens
        out[f"{name}_pass_s"] = round(wall, 2)
        out[f"{name}_pass_cpu_s"] = round(cpu, 1)
    return out


def fresh(checkout: Path, docs: int, corpus: Path) -> dict:
    """`passes` in a fresh process of `checkout` (its own venv python, its own code)."""
    python = str(checkout / ".venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable
    argv = [python, "-m", "bench.engine_passes", "--child", "--docs", str(docs)]
    done = subprocess.run(
        [*argv, "--corpus", str(corpus)], cwd=checkout, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per checkout")
    ap.add_argument("--corpus", type=Path, default=SCIFACT)
    ap.add_argument("--against", type=Path, help="another checkout to pair this one with")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(passes(args.docs, args.corpus)))
        return 0
    checkouts = {"this": REPO}
    if args.against:
        checkouts["against"] = args.against.resolve()
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    for i in range(args.runs):
        for name in checkouts if i % 2 == 0 else list(reversed(checkouts)):
            runs[name].append(fresh(checkouts[name], args.docs, args.corpus))
            r = runs[name][-1]
            print(
                f"{name}: {r['tokens']:,} tokens, first pass {r['first_pass_s']} s, "
                f"second {r['second_pass_s']} s ({r['forward_path']})",
                flush=True,
            )
    summary: dict = {"docs": args.docs, "runs": runs, "load_avg_1m": os.getloadavg()[0]}
    for name, rows in runs.items():
        for which in ("first", "second"):
            summary[f"{name}_{which}_pass_median_s"] = statistics.median(
                r[f"{which}_pass_s"] for r in rows
            )
    if args.against:
        summary["against"] = str(checkouts["against"])
        for which in ("first", "second"):
            key = f"{which}_pass_s"
            ratios = [a[key] / t[key] for t, a in zip(runs["this"], runs["against"], strict=True)]
            summary[f"{which}_pass_speedup"] = sorted(round(x, 3) for x in ratios)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
