"""Where a cold `corpusmill ingest` spends its time before (and after) the engine's work.

Runs `corpusmill ingest` of the bench texts (the first 150 SciFact documents) in fresh
processes and stores, and times each phase of each run against the process's start:
imports, Dagster set-up, the first table, the tokenizer, the model load, the first batch,
the embed stage, the exit. Functions are wrapped as their modules load (an import hook,
nothing imported early), so the child imports in the order a user's process does.
Several code trees (NAME=ROOT) run interleaved, A, B, A, B, ...; medians are printed.

    .venv/bin/python -m bench.cold_start --rounds 3
    .venv/bin/python -m bench.cold_start --rounds 3 before=/tmp/base after=.

Figures: docs/BENCHMARKS.md, "Cold start".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Child side: marks by name, seconds since the process started (from /proc).
_CHILD = r"""
import functools, gc, importlib.abc, importlib.util, json, os, sys, time, atexit
with open("/proc/self/stat") as f: _ticks = int(f.read().split(")")[1].split()[19])
with open("/proc/uptime") as f: _up = float(f.read().split()[0])
T0 = time.perf_counter() - (_up - _ticks / os.sysconf("SC_CLK_TCK"))
root, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
EV, GC = {}, [0.0, 0.0]
def _gc(phase, info):
    if phase == "start": GC[1] = time.perf_counter()
    else: GC[0] += time.perf_counter() - GC[1]
gc.callbacks.append(_gc)
def mark(name):
    EV.setdefault(name, round(time.perf_counter() - T0, 3)); EV.setdefault(name + " gc", round(GC[0], 3))
mark("python started")
def around(owner, attr, label):
    fn = getattr(owner, attr)
    @functools.wraps(fn)
    def w(*a, **k):
        mark(label + " >")
        try: return fn(*a, **k)
        finally: mark(label + " <")
    setattr(owner, attr, w)
def after_first(owner, attr, label):
    fn = getattr(owner, attr)
    @functools.wraps(fn)
    def w(*a, **k):
        r = fn(*a, **k); mark(label); return r
    setattr(owner, attr, w)
PATCH = {
    "app.runs": lambda m: (around(m, "run_ingest", "run"), around(m, "instance_for", "instance")),
    "lancedb": lambda m: mark("lancedb imported"),
    "corpusmill.model.tokenizer": lambda m: around(m.Tokenizer, "__init__", "tokenizer"),
    "corpusmill.model.encoder": lambda m: (around(m.TransformerEncoder, "__init__", "weights"),
        after_first(m.TransformerEncoder, "forward", "first forward")),
    "corpusmill.model.model": lambda m: around(m.Model, "_warm_up", "warmup"),
    "corpusmill.sync": lambda m: (around(m, "sync_documents", "documents"),
        around(m, "sync_chunks", "chunks"), around(m, "sync_embeddings", "embeddings")),
}
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCH: return None
        sys.meta_path.remove(self)
        try: spec = importlib.util.find_spec(name)
        finally: sys.meta_path.insert(0, self)
        if spec is None: return None
        run = spec.loader.exec_module
        def exec_module(module, _run=run, _name=name):
            if _name == "lancedb": mark("lancedb import >")
            _run(module); PATCH[_name](module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Hook())
atexit.register(lambda: (mark("atexit"), open(out, "w").write(json.dumps(EV))))
sys.argv = ["corpusmill"] + sys.argv[3:]
from app.cli import main
mark("cli imported")
rc = main()
mark("main returned")
sys.exit(rc)
"""


def phases(ev: dict, wall: float, cpu: float) -> dict[str, float]:
    def span(a: str, b: str) -> float:
        return ev[b] - ev[a]

    p = {
        "interpreter start + import app.cli": ev["cli imported"],
        "CLI set-up (Dagster import, resources, instance)": span("cli imported", "run >"),
        "  of which the ephemeral instance": span("instance >", "instance <"),
        "Dagster run set-up to the first step": span("run >", "lancedb import >"),
        "import lancedb (first table)": span("lancedb import >", "lancedb imported"),
        "tokenizer (transformers import, AutoTokenizer)": span("tokenizer >", "tokenizer <"),
        "raw_corpus + chunking": span("lancedb imported", "chunks <")
        - span("tokenizer >", "tokenizer <"),
        "model load (imports, weights, cast, packing)": span("weights >", "weights <"),
        "warm-up": span("warmup >", "warmup <"),
        "time to the first batch": ev["first forward"],
        "embed stage": span("warmup <", "embeddings <"),
        "after the embed stage": span("embeddings <", "main returned"),
        "interpreter exit": wall - ev["atexit"],
        "process wall": wall,
        "child CPU (user + sys)": cpu,
        "garbage collection in the run": ev["main returned gc"],
    }
    p["fixed cost (wall - embed stage)"] = wall - p["embed stage"]
    return {k: round(v, 3) for k, v in p.items()}


def run_once(root: str, corpus: Path, work: Path) -> dict[str, float]:
    db, out = work / "db", work / "phases.json"
    shutil.rmtree(db, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["CORPUSMILL_DB"] = str(db)
    argv = [sys.executable, "-c", _CHILD, root, str(out), "ingest", "--json"]
    argv += ["--label", "scifact", str(corpus)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"corpusmill ingest failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return phases(json.loads(out.read_text()), wall, cpu)


def main(argv=None) -> int:
    from bench.corpus_texts import SCIFACT, read_docs

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trees", nargs="*", help="NAME=ROOT code trees (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--docs", type=int, default=150)
    ap.add_argument("--corpus", default=str(SCIFACT))
    args = ap.parse_args(argv)
    trees = [t.split("=", 1) for t in args.trees] or [["this", str(REPO)]]
    trees = [[name, str(Path(root).resolve())] for name, root in trees]
    _, docs = read_docs(args.docs, Path(args.corpus))
    rows: dict[str, list[dict]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory(prefix="corpusmill-cold-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
        for r in range(args.rounds):
            for name, root in trees if r % 2 == 0 else trees[::-1]:
                load = round(os.getloadavg()[0], 2)
                p = run_once(root, corpus, work)
                p["load average"] = load
                rows[name].append(p)
                print(
                    f"round {r + 1} {name}: wall {p['process wall']:.2f} s, first batch "
                    f"{p['time to the first batch']:.2f} s, fixed {p['fixed cost (wall - embed stage)']:.2f} s, "
                    f"load {load}",
                    flush=True,
                )
    names = [name for name, _ in trees]
    print(f"\n{'phase (median seconds)':50}" + "".join(f"{n:>12}" for n in names))
    for key in rows[names[0]][0]:
        cells = "".join(f"{statistics.median(x[key] for x in rows[n]):12.2f}" for n in names)
        print(f"{key:50}{cells}")
    print(json.dumps({"docs": args.docs, "rounds": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
