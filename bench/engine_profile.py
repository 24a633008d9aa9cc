"""Where the CPU forward spends its time, per op, against the bf16 peer, on the same batches.

The engine's batches of the bench's SciFact chunks (length-sorted, 4,096-token budget) go
through several forwards in turn, the order alternating every round, each on the threading
it runs with:

  peer_bf16            sentence-transformers' model loaded in bf16 (Transformers' forward,
                       everything bf16), both intra-op threads: the tuned peer
  transformers_2t      Transformers' forward as corpusmill ran it before issue 25 (bf16
                       autocast: LayerNorm, softmax and the residual stream in float32;
                       Linear layers on oneDNN-packed weights), both intra-op threads
  transformers_1t      the same on one thread (what one CPU stream runs), x2 streams
  bert_cpu_1t          the packed forward (model/bert_cpu.py) on one thread, x2 streams
  bert_cpu_2t          the packed forward on both intra-op threads (no streams)

Reports tokens/s per forward (the 1-thread ones run as two streams, two batches at once,
as the engine runs them), what each factor costs on its own (precision policy, threads
against streams, padding, first pass over new shapes), and with `--ops` the profiler's
per-op self time per 1k tokens for each forward.

    .venv/bin/python -m bench.engine_profile [--rounds 3] [--ops]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.corpus_texts import SCIFACT, chunk_docs, read_docs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--docs", type=int, default=150)
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument("--ops", action="store_true", help="per-op profile of each forward")
    args = ap.parse_args(argv)

    import torch

    from corpusmill.engine import streams
    from corpusmill.engine.planner import plan_batches
    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.files import default_model_path

    path = default_model_path()
    hf = TransformerEncoder(path, forward="transformers")
    packed = TransformerEncoder(path, forward="bert_cpu")
    from sentence_transformers import SentenceTransformer

    peer = SentenceTransformer(str(path), device="cpu", model_kwargs={"dtype": torch.bfloat16})
    peer_model = peer[0].auto_model

    _, docs = read_docs(args.docs, Path(args.corpus))
    texts = chunk_docs("", docs, hf.tokenizer, hf.max_seq_length)
    tokens = hf.tokenize(texts.texts)
    plan = plan_batches([len(t["input_ids"]) for t in tokens], 4096)
    rows = [[tokens[i] for i in b] for b in plan.batches]
    padded = [hf.collate(r) for r in rows]
    packs = [packed.collate(r) for r in rows]
    total = texts.total_tokens

    def peer_forward(batch):
        with torch.inference_mode():
            return peer_model(**batch).last_hidden_state

    def one_pass(fn, batches):
        for b in batches:
            fn(b)

    def on_streams(fn, batches):
        """Two threads of one intra-op thread each, taking batches from one list."""
        todo = list(batches)

        def work(_i: int) -> None:
            while todo:
                try:
                    b = todo.pop()
                except IndexError:
                    return
                fn(b)

        for w in streams.start(2, 1, work):
            w.join()

    forwards = {
        "peer_bf16": lambda: one_pass(peer_forward, padded),
        "transformers_2t": lambda: one_pass(hf.forward, padded),
        "transformers_1t": lambda: on_streams(hf.forward, padded),
        "bert_cpu_1t": lambda: on_streams(packed.forward, packs),
        "bert_cpu_2t": lambda: one_pass(packed.forward, packs),
    }
    # The first pass over these shapes, then the rounds (the same shapes again).
    first = {}
    for name, fn in forwards.items():
        t0 = time.perf_counter()
        fn()
        first[name] = total / (time.perf_counter() - t0)
    per: dict[str, list[float]] = {n: [] for n in forwards}
    for r in range(args.rounds):
        order = list(forwards) if r % 2 == 0 else list(reversed(forwards))
        for name in order:
            t0 = time.perf_counter()
            forwards[name]()
            per[name].append(total / (time.perf_counter() - t0))

    def ratio(a: str, b: str) -> list[float]:
        return [round(x / y, 3) for x, y in zip(per[a], per[b], strict=True)]

    # Precision policy alone: Transformers' forward with the whole model in bf16 (the
    # peer's policy) against autocast, same kernels, one thread, one batch at a time.
    whole = TransformerEncoder(path, forward="transformers")
    whole.model.to(torch.bfloat16)
    whole._autocast = lambda: __import__("contextlib").nullcontext()  # already bf16
    policy = []
    streams.run_on_thread(1, lambda: one_pass(whole.forward, padded))  # its first pass
    for r in range(args.rounds):
        pair = {}
        for name, enc in (
            (("autocast", hf), ("whole_bf16", whole))
            if r % 2 == 0
            else (
                ("whole_bf16", whole),
                ("autocast", hf),
            )
        ):
            t0 = time.thread_time()
            streams.run_on_thread(1, lambda enc=enc: one_pass(enc.forward, padded))
            pair[name] = time.thread_time() - t0
        policy.append(round(pair["autocast"] / pair["whole_bf16"], 3))

    # New shapes against repeated ones (oneDNN creates a primitive per new shape; does it
    # cost?): the same batches with every sequence cut by r+1 tokens (all-new row counts and
    # lengths every pass) against the uncut batches again, one stream, thread CPU time.
    def cut(n: int) -> list[dict]:
        return [packed.collate([{"input_ids": t["input_ids"][:-n]} for t in r]) for r in rows]

    shapes = []
    for r in range(args.rounds):
        fresh = cut(r + 1)
        pair = {}
        for name, batches in (("repeated", packs), ("new", fresh)):
            t0 = time.thread_time()
            streams.run_on_thread(1, lambda b=batches: one_pass(packed.forward, b))
            n_tokens = sum(int(b["lengths"].sum()) for b in batches)
            pair[name] = n_tokens / (time.thread_time() - t0)
        shapes.append(round(pair["new"] / pair["repeated"], 3))

    result = {
        "tokens": total,
        "batches": len(rows),
        "padding_fraction_of_padded_batches": round(
            1 - total / sum(b["input_ids"].numel() for b in padded), 4
        ),
        "tokens_per_s": {n: round(statistics.median(v)) for n, v in per.items()},
        "first_pass_tokens_per_s": {n: round(v) for n, v in first.items()},
        "costs": {
            "bert_cpu_streams_vs_peer_bf16": ratio("bert_cpu_1t", "peer_bf16"),
            "bert_cpu_streams_vs_transformers_2t": ratio("bert_cpu_1t", "transformers_2t"),
            "streams_vs_threads_transformers": ratio("transformers_1t", "transformers_2t"),
            "streams_vs_threads_bert_cpu": ratio("bert_cpu_1t", "bert_cpu_2t"),
            "transformers_2t_vs_peer_bf16": ratio("transformers_2t", "peer_bf16"),
            "autocast_vs_whole_bf16_time_1t": policy,
            "new_shapes_vs_repeated_bert_cpu_1t": shapes,
        },
    }
    if args.ops:
        # The profiler records the thread that starts it: the one-thread forwards are
        # profiled as one stream, in a thread of their own.
        single = {
            "peer_bf16": (lambda: one_pass(peer_forward, padded), 2),
            "transformers_2t": (lambda: one_pass(hf.forward, padded), 2),
            "transformers_1t": (lambda: one_pass(hf.forward, padded), 1),
            "bert_cpu_1t": (lambda: one_pass(packed.forward, packs), 1),
            "bert_cpu_2t": (lambda: one_pass(packed.forward, packs), 2),
        }
        result["ops_ms_per_1k_tokens"] = {
            name: streams.run_on_thread(threads, lambda fn=fn: profile_ops(fn, total))
            for name, (fn, threads) in single.items()
        }
    for name, values in per.items():
        print(
            f"{name:>16}: "
            + " ".join(f"{v:,.0f}" for v in values)
            + f"  (first {first[name]:,.0f})"
        )
    print(json.dumps(result))
    return 0


def profile_ops(fn, tokens: int, top: int = 12) -> dict[str, float]:
    """Self CPU milliseconds per 1,000 tokens of the `top` costliest ops of one pass, and
    the pass's wall milliseconds per 1,000 tokens (`wall`), in the calling thread."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    out = {e.key: round(e.self_cpu_time_total / tokens, 2) for e in rows[:top]}
    return {"wall": round(wall * 1e6 / tokens, 2), **out}


if __name__ == "__main__":
    raise SystemExit(main())
