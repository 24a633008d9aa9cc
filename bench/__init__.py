"""Benchmarks, run from the repository root as `python -m bench.<module>` (the Makefile's
bench targets; results in docs/BENCHMARKS.md).

Importing the package prepares the process as corpusmill's own entry points do, before any
benchmark imports torch: the OpenMP wait policy (a spinning worker costs 2-3x on a shared
2-core machine) and no model hub.
"""

from corpusmill.config import prepare_process

prepare_process()
