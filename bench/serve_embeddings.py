"""Embeddings throughput through `corpusmill serve`'s /v1/embeddings, side by side with the
in-process engine and with infinity's OpenAI route, on the same texts, in one run.

    make bench          # once: sets up infinity-emb in .venv-infinity (bench/setup_infinity.sh)
    .venv/bin/python -m bench.serve_embeddings --out bench/out/serve-embeddings.json

Texts: BEIR SciFact documents cut by corpusmill's chunker (200 tokens, overlap 32), as
`make bench` uses. Model: the packaged all-MiniLM-L6-v2. For each number of concurrent
clients (1, 8, 32) and texts per request (1, 32), every contender runs for `--seconds`
per round, the order rotated each round, so load from elsewhere falls on all alike:

  engine       in this process: each client a thread calling `Model.embed(batch)` (the
               engine alone: no HTTP, no micro-batching; dtype auto)
  microbatch   in this process: each client a thread handing its batch to the model's
               micro-batcher (`submit_many`), as the service does (no HTTP)
  serve        `corpusmill serve` as a process, clients posting to /v1/embeddings
  infinity     infinity-emb 0.0.78 (`infinity_emb v2`, its defaults, batch size 32, its
               own venv), clients posting to its OpenAI route /embeddings

HTTP clients are asyncio tasks on one httpx client in this process, asking for base64 (the
`openai` client's default); they share the 2 cores with the server, as they would on one
box. Figures: texts/s and tokens/s over the cell's wall time, p50/p99 of one request's
latency. `serve / engine` is what HTTP and micro-batching cost (or give);
`serve / infinity` is the peer comparison. Servers listen on 127.0.0.1 and are stopped by
PID.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.contenders import load_avg
from bench.corpus_texts import SCIFACT, chunk_docs, read_docs
from bench.peers import servers

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONTENDERS = ("engine", "microbatch", "serve", "infinity")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Work:
    """Requests of `batch` texts, client `n` starting at its own offset in the texts."""

    def __init__(self, texts: list[str], tokens: list[int], batch: int) -> None:
        self.texts, self.tokens, self.batch = texts, tokens, batch

    def request(self, n: int, i: int) -> tuple[list[str], int]:
        start = (n * 7919 + i * self.batch) % len(self.texts)
        idx = [(start + j) % len(self.texts) for j in range(self.batch)]
        return [self.texts[k] for k in idx], sum(self.tokens[k] for k in idx)


def threads_cell(call, work: Work, clients: int, seconds: float) -> dict:
    """`clients` threads, each calling `call(texts)` back to back until time is up."""
    ms: list[float] = []
    done = {"texts": 0, "tokens": 0}
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(n: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            texts, tokens = work.request(n, i)
            t0 = time.perf_counter()
            rows = call(texts)
            elapsed = (time.perf_counter() - t0) * 1000
            assert len(rows) == len(texts)
            with lock:
                ms.append(elapsed)
                done["texts"] += len(texts)
                done["tokens"] += tokens
            i += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return {"wall": time.perf_counter() - t0, "ms": ms, **done}


async def _http_cell(url: str, model: str, work: Work, clients: int, seconds: float) -> dict:
    import httpx

    ms: list[float] = []
    done = {"texts": 0, "tokens": 0}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:

        async def client(n: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                texts, tokens = work.request(n, i)
                body = {"input": texts, "model": model, "encoding_format": "base64"}
                t0 = time.perf_counter()
                r = await http.post("/embeddings", json=body)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.status_code != 200 or len(r.json()["data"]) != len(texts):
                    raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")
                ms.append(elapsed)
                done["texts"] += len(texts)
                done["tokens"] += tokens
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        wall = time.perf_counter() - t0
    return {"wall": wall, "ms": ms, **done}


def http_cell(url, model, work, clients, seconds) -> dict:
    return asyncio.run(_http_cell(url, model, work, clients, seconds))


def http_vectors(url: str, model: str, texts: list[str]) -> np.ndarray:
    import httpx

    body = {"input": texts, "model": model, "encoding_format": "base64"}
    r = httpx.post(f"{url}/embeddings", json=body, timeout=300)
    r.raise_for_status()
    return np.stack(
        [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]]
    )


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return round(float((a * b).sum(axis=1).min()), 6)


class Serve:
    """`corpusmill serve` on a free loopback port, over an empty scratch store."""

    def __init__(self, db: str, log: Path) -> None:
        self.port = servers.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CORPUSMILL_DB": db, "CORPUSMILL_API_TOKEN": ""}
        self.proc = subprocess.Popen(
            [str(BIN / "corpusmill"), "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )

    def wait(self) -> None:
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("serve did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=150, help="SciFact documents to chunk")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--batches", default="1,32", help="texts per request")
    p.add_argument("--seconds", type=float, default=4.0, help="per cell, contender and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated contenders (default: all)")
    p.add_argument("--quick", action="store_true", help="1 round of 1.5 s: a smoke run")
    p.add_argument("--out", default="", help="write the JSON result here too")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.5
    from corpusmill.config import Settings, prepare_process

    prepare_process()  # as the `corpusmill` entry point does: passive OpenMP waits, offline
    from corpusmill.model import Model

    names = [c for c in CONTENDERS if not args.only or c in args.only.split(",")]
    why_not = servers.infinity_unavailable()
    if "infinity" in names and why_not:
        print(f"infinity left out: {why_not}", file=sys.stderr)
        names.remove("infinity")

    model = Model(Settings.from_env().embedder_spec()).load()
    label, docs = read_docs(args.docs, SCIFACT)
    chunks = chunk_docs(label, docs, model.tokenizer, model.max_seq_length)
    texts, tokens = chunks.texts, chunks.tokens
    batcher = model.micro_batcher()
    work_dir = Path(tempfile.mkdtemp(prefix="serve-embeddings-"))
    result: dict = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "texts": f"{label}: {len(texts)} chunks, {sum(tokens)} tokens",
        "model": model.card.model_id,
        "lineage": {k: v for k, v in model.lineage().items() if k in ("device", "dtype")},
        "load_before": load_avg(),
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    urls: dict[str, tuple[str, str]] = {}  # contender -> (OpenAI base URL, model name)
    procs: list = []
    try:
        if "serve" in names:
            serve = Serve(str(work_dir / "db"), work_dir / "serve.log")
            procs.append(serve)
            serve.wait()
            urls["serve"] = (f"{serve.url}/v1", model.card.model_id)
        if "infinity" in names:
            inf = servers.infinity_server(
                servers.free_port(), work_dir / "infinity.log", model.path
            )
            procs.append(inf)
            inf.start()
            urls["infinity"] = (f"http://127.0.0.1:{inf.port}", "minilm")
        sample = texts[:64]
        reference = model.embed(sample)
        result["min_cosine_to_engine"] = {
            name: min_cosine(http_vectors(url, m, sample), reference)
            for name, (url, m) in urls.items()
        }

        def run(name: str, work: Work, clients: int, seconds: float) -> dict:
            if name == "engine":
                return threads_cell(model.embed, work, clients, seconds)
            if name == "microbatch":
                embed = lambda batch: [f.result() for f in batcher.submit_many(batch)]  # noqa: E731
                return threads_cell(embed, work, clients, seconds)
            url, m = urls[name]
            return http_cell(url, m, work, clients, seconds)

        for name in names:  # warm every path: first shapes, connections, allocator pools
            run(name, Work(texts, tokens, 32), 2, 1.0)
        cells = []
        for batch in [int(b) for b in args.batches.split(",")]:
            work = Work(texts, tokens, batch)
            for clients in [int(c) for c in args.clients.split(",")]:
                parts: dict[str, list[dict]] = {n: [] for n in names}
                for r in range(args.rounds):
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        parts[name].append(run(name, work, clients, args.seconds))
                cell = {"batch": batch, "clients": clients}
                for name, runs in parts.items():
                    ms = [m for x in runs for m in x["ms"]]
                    wall = sum(x["wall"] for x in runs)
                    per_round = [x["tokens"] / x["wall"] for x in runs]
                    cell[name] = {
                        "texts_per_s": round(sum(x["texts"] for x in runs) / wall, 1),
                        "tokens_per_s": round(sum(x["tokens"] for x in runs) / wall),
                        "tokens_per_s_rounds": [round(v) for v in per_round],
                        "p50_ms": round(statistics.median(ms), 2),
                        "p99_ms": round(pct(ms, 0.99), 2),
                        "requests": len(ms),
                    }
                for a, b in (("serve", "engine"), ("serve", "infinity")):
                    if a in parts and b in parts:
                        ratios = [
                            x["tokens"] / x["wall"] / (y["tokens"] / y["wall"])
                            for x, y in zip(parts[a], parts[b], strict=True)
                        ]
                        cell[f"{a}/{b}"] = {
                            "median": round(statistics.median(ratios), 2),
                            "min": round(min(ratios), 2),
                            "max": round(max(ratios), 2),
                        }
                cells.append(cell)
                print(json.dumps(cell), file=sys.stderr, flush=True)
        result["cells"] = cells
        result["microbatch"] = batcher.stats()
    finally:
        batcher.close()
        for proc in procs:
            proc.stop()
    result["load_after"] = load_avg()
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
