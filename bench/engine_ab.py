"""Paired A/B of engine variants in one process: the bench's SciFact chunks through each
variant in turn, the order alternating every round, tokens/s and paired ratios printed.

Variants are `ModelSpec` changes (`name:key=value,...`; values parsed as Python literals, a
bare word as a string), each a `Model` loaded as a run loads it (the forward probe, CPU
streams). Process-wide settings (OpenMP's wait policy and spin count) cannot differ within
one process: run the script once per setting, with the environment set explicitly, e.g.

    .venv/bin/python -m bench.engine_ab --variant default: --variant before:forward=transformers,cpu_streams=1
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m bench.engine_ab --variant bf16: --variant int8:dtype=int8
    GOMP_SPINCOUNT=300 .venv/bin/python -m bench.engine_ab --variant bf16: --hogs 2

`--hogs N` runs N busy-loop processes beside it (the shared-machine case), stopped by PID at
the end. Like every bench, this runs `prepare_process()` (bench/__init__.py), which defaults
OMP_WAIT_POLICY to PASSIVE; `OMP_WAIT_POLICY=` (empty) gives libgomp's own default.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.corpus_texts import SCIFACT, chunk_docs, read_docs


def parse_variant(spec: str) -> tuple[str, dict]:
    """`name:key=value,...` -> (name, options)."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw
    return name, options


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, help="name:key=value,...")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--docs", type=int, default=150)
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument("--hogs", type=int, default=0, help="busy-loop processes beside the run")
    args = ap.parse_args(argv)

    from corpusmill.config import Settings
    from corpusmill.model import Model

    spec = Settings.from_env().embedder_spec()
    variants = [parse_variant(v) for v in args.variant]
    engines = {name: Model(spec.with_(**options)).load() for name, options in variants}
    first = next(iter(engines.values()))
    _, docs = read_docs(args.docs, Path(args.corpus))
    texts = chunk_docs("", docs, first.tokens.hf, first.max_seq_length)
    for engine in engines.values():  # warm every variant on the whole set once
        engine.encode(texts.texts)

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    per: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for name in order:
                _, stats = engines[name].encode(texts.texts)
                per[name].append(texts.total_tokens / stats.wall_seconds)
    finally:
        for p in hogs:
            p.kill()
            p.wait()

    base = next(iter(per))
    result = {
        "tokens": texts.total_tokens,
        "lineage": {
            n: {k: m.lineage()[k] for k in ("forward_path", "forward_streams", "dtype")}
            for n, m in engines.items()
        },
        "hogs": args.hogs,
        "omp": {k: os.environ.get(k, "") for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "tokens_per_s": {n: round(statistics.median(v)) for n, v in per.items()},
        f"ratio_to_{base}": {
            n: [round(a / b, 3) for a, b in zip(v, per[base], strict=True)]
            for n, v in per.items()
            if n != base
        },
    }
    for name, values in per.items():
        print(f"{name:>12}: " + " ".join(f"{v:,.0f}" for v in values))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
