"""corpusmill: a corpus -> chunks -> embeddings -> rerank scores batch engine on LanceDB.

This package is the core: plain Python, no Dagster. The Dagster wiring (assets/,
resources/, sensors/, definitions.py) and the applications (app/: the CLI, the query
service, the eval harness) sit above it and import it; it never imports them.
"""

from corpusmill.deferred_imports import defer_unused_inits

defer_unused_inits()  # before anything imports lancedb: see corpusmill/deferred_imports.py
