"""Peak memory against corpus size: run in a child process, once at 1x and once at 10x.

The engine streams a generator of chunk texts (the corpus repeated `--repeat` times, never
materialised as a list) into a real LanceDB table, window by window. If it streams, peak
RSS stays flat as the corpus grows; if anything holds the whole corpus, it grows with it.
The window is small here (16 chunks) so that even the 1x corpus spans several windows; the
model resource uses 4096, which bounds memory the same way at a larger constant.

    python -m bench.memory_probe --docs 40 --repeat 10   # prints one JSON line
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import tempfile
import time
from pathlib import Path

from bench.corpus_texts import SCIFACT, chunk_docs, read_docs


def current_rss_mb() -> float:
    """Resident set size now (ru_maxrss is a high-water mark that model loading sets)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--repeat", type=int, required=True)
    ap.add_argument("--corpus", default="")
    ap.add_argument("--window", type=int, default=16)
    args = ap.parse_args()

    import lancedb
    import pyarrow as pa

    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.files import default_model_path
    from corpusmill.model.hardware import default_batch_tokens

    encoder = TransformerEncoder(default_model_path())
    name, docs = read_docs(args.docs, Path(args.corpus) if args.corpus else SCIFACT)
    base = chunk_docs(name, docs, encoder.tokenizer, encoder.max_seq_length).texts
    del docs
    engine = BatchEngine(
        encoder, max_batch_tokens=default_batch_tokens(encoder.device), window=args.window
    )
    engine.encode(base[:8])  # warm-up, outside the measurement's growth
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with tempfile.TemporaryDirectory(prefix="corpusmill-mem-") as tmp:
        table = None
        written = 0
        stream_peak = [current_rss_mb()]

        def sink(items, rows, failed):
            nonlocal table, written
            batch = pa.table(
                {
                    "id": pa.array([f"{written + i}" for i in range(len(items))]),
                    "vector": pa.FixedSizeListArray.from_arrays(
                        pa.array(rows.reshape(-1)), rows.shape[1]
                    ),
                }
            )
            if table is None:
                table = lancedb.connect(tmp).create_table("vectors", batch)
            else:
                table.add(batch)
            written += len(items)
            stream_peak[0] = max(stream_peak[0], current_rss_mb())

        stream = itertools.chain.from_iterable(itertools.repeat(base, args.repeat))
        t0 = time.perf_counter()
        stats = engine.run(stream, sink)
        seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "repeat": args.repeat,
                "items": stats.items,
                "tokens": stats.real_tokens,
                "rows_written": written,
                "seconds": round(seconds, 2),
                "window": args.window,
                "peak_rss_after_load_mb": round(rss_before, 1),
                "rss_while_streaming_max_mb": round(stream_peak[0], 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
