"""Scaling out: embeddings on a Ray actor pool, committed once into LanceDB (any URI).

`ray_embed` (driver: plan ids, dispatch units, commit through the store), `worker` (the
actor: resident model, reads its own chunks, writes fragments through the store),
`cluster` (Ray, kept on loopback). The per-chunk rules are the in-process path's
(`corpusmill.sync.embed_step`); every read and write of a table goes through
`corpusmill.store` (`Store.snapshot`, `Store.commit_fragments`).
Ray and pylance are the `scale` extra and are imported only when this path runs.
"""
