"""Small inputs: the engine in the calling thread against its three threads, and against
calling the encoder directly (what `Model.embed` did for <= 64 texts before issue 22).

    .venv/bin/python -m bench.engine_inline [--rounds 3]

SciFact queries (../shared/eval/scifact/queries.jsonl) in groups of 1 to 256, MiniLM as the
model resource builds it (device and dtype `auto`), the three ways in turn for each group,
the order alternating every group; prints milliseconds per call (p50 and mean) per size,
and checks the rows are the same all three ways (max abs difference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from bench.corpus_texts import SCIFACT

QUERIES = SCIFACT.with_name("queries.jsonl")

SIZES = (1, 4, 16, 64, 256)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="passes over the queries per size")
    p.add_argument(
        "--no-forward",
        action="store_true",
        help="replace the model's forward by a no-op: what each path itself costs, which a "
        "busy machine's noise in the forward hides",
    )
    args = p.parse_args()

    from corpusmill.engine.runner import BatchEngine
    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.files import default_model_path
    from corpusmill.model.hardware import default_batch_tokens

    queries = [json.loads(line)["text"] for line in QUERIES.open()]
    enc = TransformerEncoder(default_model_path(), dtype="auto")
    if args.no_forward:
        enc = NoForward(enc)
    budget = default_batch_tokens(enc.device)
    engine = BatchEngine(enc, max_batch_tokens=budget)  # decides: <= 64 items inline
    threaded = BatchEngine(enc, max_batch_tokens=budget, inline_items=0)

    def direct(texts):
        return enc.forward(enc.collate(enc.tokenize(texts)))

    ways = {
        "engine": lambda t: engine.encode(t)[0],
        "threads": lambda t: threaded.encode(t)[0],
        "direct": direct,
    }
    for way in ways.values():  # warm up both shapes
        way(queries[:4])
        way(queries[:1])
    print(
        json.dumps(
            {
                "device": enc.device,
                "dtype": enc.dtype_name,
                "max_batch_tokens": budget,
                "forward": "no-op" if args.no_forward else "model",
            }
        )
    )
    for size in SIZES:
        # Beyond 64 texts the old Model.embed used the engine too: no direct call there.
        here = {k: v for k, v in ways.items() if k != "direct" or size <= 64}
        times: dict[str, list[float]] = {k: [] for k in here}
        worst = 0.0
        groups = [queries[i : i + size] for i in range(0, len(queries) - size + 1, size)]
        groups = groups[: max(8, 200 // size)]
        for r in range(args.rounds):
            for g, texts in enumerate(groups):
                order = list(here.items())
                if (r + g) % 2:
                    order.reverse()
                rows = {}
                for name, way in order:
                    t0 = time.perf_counter()
                    rows[name] = way(texts)
                    times[name].append((time.perf_counter() - t0) * 1000)
                for other in rows.values():
                    worst = max(worst, float(np.abs(rows["engine"] - other).max()))
        print(
            json.dumps(
                {
                    "size": size,
                    "calls": len(times["engine"]),
                    **{
                        f"{k}_ms": {
                            "p50": round(statistics.median(v), 2),
                            "mean": round(statistics.mean(v), 2),
                        }
                        for k, v in times.items()
                    },
                    "max_abs_diff": worst,
                }
            ),
            flush=True,
        )


class NoForward:
    """The encoder's tokenizer with a forward that returns zero rows at once."""

    def __init__(self, enc) -> None:
        self.enc, self.pad_id = enc, enc.pad_id
        self.device, self.dtype_name = enc.device, enc.dtype_name

    def tokenize(self, texts):
        return self.enc.tokenize(texts)

    def forward(self, batch) -> np.ndarray:
        return np.zeros((batch["input_ids"].shape[0], self.enc.card.dimension), np.float32)


if __name__ == "__main__":
    main()
