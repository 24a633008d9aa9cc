"""The Ray path with real GPU actors against the in-process engine on the same GPU.

For a CUDA machine (bench/gpu.sh runs it when ray and pylance import there, as root, in a
private network namespace: `python -m tools.netns -- python -m bench.ray_gpu`). One local
Ray cluster on this machine; `--workers` actors (default: one per GPU), each `EmbedWorker`
with a real resident model on its own GPU (`num_gpus=1`, `actor_resources`), over a local
Lance store of `--chunks` chunks of real text (SciFact from `--corpus`, else the Python
made-up sentences), read, embedded and written by the workers and committed by the
driver per slice. Beside it, in this process, the engine alone on GPU 0 over the same
texts (warm: one pass first). Reports tokens/s per worker (the workers' own tokens over
their busy seconds), the run's tokens/s, and the in-process engine's tokens/s.

    python -m bench.ray_gpu --model .gpu/minilm-l6-fp16 --corpus .gpu/scifact.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def corpus_texts(path: str, limit: int) -> list[str]:
    texts = []
    if path and Path(path).exists():
        with open(path) as f:
            for line in f:
                doc = json.loads(line)
                texts.append(f"{doc.get('title', '')}. {doc.get('text', '')}"[:1500])
                if len(texts) >= limit:
                    break
    if not texts:  # no corpus here: made-up sentences of about 200 tokens
        texts = [
            " ".join(f"term{(i * 7 + j) % 997} of sentence {j}" for j in range(40))
            for i in range(limit)
        ]
    return texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="")
    ap.add_argument("--corpus", default="")
    ap.add_argument("--chunks", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=0, help="0: one per GPU")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run on a machine without one")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import torch

    from bench.scale_out import print_summary
    from bench.stand_in import fill_chunks
    from corpusmill.config import prepare_process
    from corpusmill.ids import ALL_PARTITIONS
    from corpusmill.model import Model, ModelSpec
    from corpusmill.scale.cluster import ray_cluster
    from corpusmill.scale.ray_embed import sync_embeddings_on_ray
    from corpusmill.store import Store

    prepare_process()
    gpus = torch.cuda.device_count()
    workers = args.workers or max(1, gpus)
    spec = ModelSpec(
        path=args.model, dtype=args.dtype, device="cpu" if args.device == "cpu" else "auto"
    )
    texts = corpus_texts(args.corpus, 5000)
    out: dict = {"gpus": gpus, "workers": workers, "chunks": args.chunks, "dtype": args.dtype}

    # The engine alone, in this process, on GPU 0: the same texts, warm.
    engine = Model(spec.with_(device=args.device))
    sample = [f"{texts[i % len(texts)]} [{i}]" for i in range(args.chunks)]
    engine.encode(sample[:2000])
    t0 = time.perf_counter()
    _rows, stats = engine.encode(sample)
    seconds = time.perf_counter() - t0
    out["in_process_tokens_per_s"] = round(stats.real_tokens / seconds, 1)
    card, tokenizer_id = engine.card, engine.tokenizer_id
    engine.release()
    del engine
    if gpus:
        torch.cuda.empty_cache()

    with (
        tempfile.TemporaryDirectory(prefix="ray-gpu-") as tmp,
        ray_cluster(num_cpus=os.cpu_count(), runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}}),
    ):
        store = Store(tmp)
        fill_chunks(store, args.chunks, texts=texts)
        t0 = time.perf_counter()
        report, ray_stats = sync_embeddings_on_ray(
            store,
            spec,
            card,
            ALL_PARTITIONS,
            run_key="ray-gpu",
            workers=workers,
            tokenizer_id=tokenizer_id,
        )
        wall = time.perf_counter() - t0
    rates = list(ray_stats.tokens_per_s_per_worker.values())
    out.update(
        ray_devices=ray_stats.devices,
        ray_chunks_embedded=report.chunks_embedded,
        ray_tokens=ray_stats.tokens,
        ray_wall_seconds=round(wall, 2),
        ray_tokens_per_s=round(ray_stats.tokens / wall, 1) if wall else 0.0,
        ray_tokens_per_s_per_worker=ray_stats.tokens_per_s_per_worker,
        ray_worker_mean_over_in_process=round(
            (sum(rates) / len(rates)) / out["in_process_tokens_per_s"], 3
        )
        if rates
        else 0.0,
        ray_commit_seconds=round(ray_stats.commit.seconds, 3) if ray_stats.commit else 0.0,
    )
    return print_summary(out, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
