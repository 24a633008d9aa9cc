"""corpusmill: a corpus -> chunks -> embeddings -> rerank scores batch engine on LanceDB.

This package is the core: plain Python, no Dagster. The Dagster wiring (assets/,
resources/, sensors/, definitions.py) and the applications (app/: the CLI, the query
service, the eval harness) sit above it and import it; it never imports them.
"""
