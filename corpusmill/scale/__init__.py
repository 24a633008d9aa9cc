"""Scaling out: embeddings on a Ray actor pool, committed once into LanceDB (any URI).

`ray_embed` (driver: plan ids, dispatch units, commit), `worker` (the actor: resident
model, reads its own chunks, writes fragments), `commit` (one commit per run key),
`cluster` (Ray, kept on loopback).
Ray and pylance are the `scale` extra and are imported only when this path runs.
"""
