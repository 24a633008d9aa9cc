"""The host side of the embeddings stage, fed to a STAND-IN DEVICE whose forward returns at
once: how many tokens per second the real stage can hand to a device and write back.

On a GPU the forward is fast and the host does everything else: read the chunks' stored
token ids from `chunks`, collate them into batches, hand them over, take the rows back,
check them, build the `embeddings` rows and commit them. MiniLM's forward alone ran at
~1M tokens/s on an H100 (docs/BENCHMARKS.md, `make bench-gpu`), so a host side slower than
that caps the GPU whatever the GPU does. This runs the real stage
(`corpusmill.sync.sync_embeddings` over all 16 shards, as one run does) through the real
engine configured as on CUDA (one launching thread, launch-ahead, the CUDA token budget and
tokenising threads), with the model replaced by `InstantDevice`: STAND-IN, NOT A MODEL, its
rows are one fixed unit vector, returned without any work. The chunks come from the real
pipeline's documents and chunks stages (MiniLM's tokenizer, no weights loaded).

    .venv/bin/python -m bench.host_feed [--docs 5183] [--rounds 3] [--profile]

Prints one line per round and a JSON summary as the last line: `host_feed_tokens_per_s`
(the median) with the stage's own breakdown (engine seconds, reading, writing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.corpus_texts import SCIFACT


class InstantDevice:
    """STAND-IN DEVICE, NOT A MODEL: the embedder's tokenizer and card, and a forward that
    returns one fixed unit vector per row at once (as `launch`, the CUDA engine's call,
    with a `wait` that has nothing to wait for)."""

    device = "cuda (stand-in)"
    packed_batches = False

    def __init__(self, tokens, dimension: int) -> None:
        self.tokens = tokens
        self.pad_id = tokens.pad_id
        self.uses_token_type_ids = tokens.uses_token_type_ids
        row = np.ones(dimension, dtype=np.float32)
        self.row = row / np.linalg.norm(row)

    def tokenize(self, texts):
        return self.tokens.tokenize(texts)

    def forward(self, batch: dict) -> np.ndarray:
        return np.broadcast_to(self.row, (batch["input_ids"].shape[0], self.row.size))

    def launch(self, batch: dict):
        return _Ready(self.forward(batch))

    def record_kernel_shapes(self) -> None:
        """What `Model.release` asks of its encoder: a stand-in runs no kernels to record."""


class _Ready:
    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def wait(self) -> np.ndarray:
        return self.rows


def stand_in_model(spec):
    """A `Model` (the real one: tokenizer, card, `embed_stream`, lineage) whose engine runs
    `InstantDevice` with the engine settings a CUDA load gets (model/model.py)."""
    import torch  # noqa: F401  (a CUDA load imports it before the stage; collate uses it)

    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model import Model
    from corpusmill.model.hardware import default_batch_tokens, default_tokenize_threads

    model = Model(spec)
    device = InstantDevice(model.tokens, model.card.dimension)
    model._encoder = device
    model._engine = BatchEngine(
        device,
        max_batch_tokens=default_batch_tokens("cuda"),
        tokenize_threads=default_tokenize_threads("cuda"),
        launch_ahead=True,
    )
    return model


def prepare(work: Path, docs: int, corpus: Path, settings) -> Path:
    """`documents` and `chunks` for the first `docs` documents, by the real stages."""
    from corpusmill.chunking import TokenChunker
    from corpusmill.ids import ALL_PARTITIONS
    from corpusmill.model import Model
    from corpusmill.sources import parse_source
    from corpusmill.store import Store
    from corpusmill.sync import sync_chunks, sync_documents

    subset = work / "corpus.jsonl"
    with corpus.open() as src, subset.open("w") as out:
        for i, line in enumerate(src):
            if i >= docs:
                break
            out.write(line)
    db = work / "db"
    store = Store(str(db))
    model = Model(settings.embedder_spec())
    store.create_tables(model.card)
    sync_documents(
        store,
        ALL_PARTITIONS,
        [parse_source(f"scifact={subset}")],
        settings.read_options(),
    )
    chunker = TokenChunker(
        model.tokenizer,
        settings.chunk_tokens,
        settings.chunk_overlap,
        model.max_seq_length,
        tokenizer_id=model.tokenizer_id,
    )
    sync_chunks(store, chunker, ALL_PARTITIONS)
    return db


def one_round(prepared: Path, work: Path, settings, profile: bool) -> dict:
    from corpusmill.ids import ALL_PARTITIONS
    from corpusmill.store import Store
    from corpusmill.sync import sync_embeddings

    db = work / "round-db"
    shutil.rmtree(db, ignore_errors=True)
    shutil.copytree(prepared, db)
    store = Store(str(db))
    model = stand_in_model(settings.embedder_spec())
    stats = []

    def embed(items, sink):
        stats.append(model.embed_stream(items, sink))

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    report = sync_embeddings(
        store, embed, model.card, ALL_PARTITIONS, tokenizer_id=model.tokenizer_id
    )
    seconds = time.perf_counter() - t0
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    (engine,) = stats
    assert report.chunks_embedded == engine.items and not report.failed
    return {
        "tokens": engine.real_tokens,
        "chunks": report.chunks_embedded,
        "pretokenized": engine.pretokenized,
        "seconds": round(seconds, 3),
        "host_feed_tokens_per_s": round(engine.real_tokens / seconds),
        "engine_seconds": round(engine.wall_seconds, 3),
        "engine_tokens_per_s": round(engine.tokens_per_second),
        "read_and_collate_seconds": round(engine.tokenize_seconds, 3),
        "write_seconds": round(engine.sink_seconds, 3),
        "batches": engine.batches,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=5183, help="SciFact documents (default all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument("--profile", action="store_true", help="cProfile of the last round (stderr)")
    args = ap.parse_args(argv)

    from corpusmill.config import Settings

    settings = Settings.from_env()
    work = Path(tempfile.mkdtemp(prefix="host-feed-"))
    try:
        t0 = time.perf_counter()
        prepared = prepare(work, args.docs, Path(args.corpus), settings)
        prepare_s = time.perf_counter() - t0
        rounds = []
        for r in range(args.rounds):
            row = one_round(prepared, work, settings, args.profile and r == args.rounds - 1)
            rounds.append(row)
            print(
                f"round {r + 1}: {row['tokens']:,} tokens ({row['chunks']:,} chunks) in "
                f"{row['seconds']:.2f} s: {row['host_feed_tokens_per_s']:,} tokens/s "
                f"(engine {row['engine_tokens_per_s']:,}/s; read+collate "
                f"{row['read_and_collate_seconds']} s, write {row['write_seconds']} s)",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    values = [r["host_feed_tokens_per_s"] for r in rounds]
    print(
        json.dumps(
            {
                "device": "STAND-IN: forward returns a fixed unit vector at once, no model",
                "host_feed_tokens_per_s": round(statistics.median(values)),
                "spread": {"min": min(values), "max": max(values), "n": len(values)},
                "docs": args.docs,
                "prepare_seconds": round(prepare_s, 1),
                "rounds": rounds,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
