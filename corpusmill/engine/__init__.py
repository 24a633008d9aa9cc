"""The batch engine: a resident encoder, token-budget batches, overlapped stages."""

import os

# OpenMP worker threads spin (busy-wait) between torch ops by default. On a shared 2-core
# machine a spinning worker burns the core the other worker needs, and MiniLM ran 2-3x
# slower (1.3k vs 3.7k tokens/s with load average ~7, docs/BENCHMARKS.md). Sleeping
# workers cost an estimated 1-2% on an idle machine. libgomp reads this once, when torch is
# first imported, so it only takes effect if corpusmill.engine is imported before torch
# (the CLI, the Dagster code location and the benchmark do); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
