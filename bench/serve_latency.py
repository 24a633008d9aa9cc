"""The query service against a cold `corpusmill search` and LanceDB alone, in one run.

    .venv/bin/corpusmill eval                 # builds ./data/eval-scifact once
    .venv/bin/python bench/serve_latency.py --db ./data/eval-scifact \\
        --out docs/results/serve-<date>.json

1. One query at a time (vector, k=10): p50/p99 through `corpusmill serve` (HTTP on
   127.0.0.1, model resident), through `corpusmill search` in a fresh process each time
   (imports, model load, search), and LanceDB alone with the query vector precomputed
   (the floor: no model, no HTTP).
2. Queries per second with 1, 8 and 32 concurrent clients, micro-batching on (the default
   2 ms wait) and off (`--no-microbatch`: one forward per query): two servers up at once,
   taking turns (`--rounds`), so other load on the machine falls on both alike.
3. 1,000 SciFact queries: `corpusmill search --queries FILE --json` (one process, one
   embedding pass, start-up included) against one HTTP request per query to the warm
   service, and against one `POST /search/batch`.

Servers listen on 127.0.0.1 only and are stopped by PID. The clients run on the same
machine as the server, so they take CPU from it: the figures are for one box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(pct(ms, 0.99), 2),
    }


def scifact_queries(n: int) -> list[str]:
    from corpusmill.config import Settings

    out = []
    with open(Path(Settings.from_env().eval_data) / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["text"])
    return out[:n]


class Server:
    """`corpusmill serve` as a child process on a free loopback port."""

    def __init__(self, env: dict, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(BIN / "corpusmill"), "serve", "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Server:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("serve did not come up in 180 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def sequential(url: str, queries: list[str], mode: str = "vector") -> list[float]:
    import httpx

    ms = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for q in queries:
            t0 = time.perf_counter()
            r = client.post("/search", json={"query": q, "k": 10, "mode": mode})
            ms.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
    return ms


async def _load(url: str, queries: list[str], clients: int, seconds: float) -> dict:
    import httpx

    done: list[float] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(n: int) -> None:
            i = n
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.post("/search", json={"query": queries[i % len(queries)]})
                r.raise_for_status()
                done.append((time.perf_counter() - t0) * 1000)
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(clients)))
        wall = time.perf_counter() - t0
    return {"ms": done, "wall": wall}


def throughput(servers: dict[str, str], queries: list[str], levels, seconds, rounds) -> dict:
    """{name: [row per level]}: the servers take turns, `rounds` times per level, so load
    from other work on the machine falls on both alike."""
    import httpx

    out: dict[str, list[dict]] = {name: [] for name in servers}
    for clients in levels:
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, url in servers.items():
                before = httpx.get(f"{url}/health").json()
                run = asyncio.run(_load(url, queries, clients, seconds / rounds))
                after = httpx.get(f"{url}/health").json()
                run["forwards"] = after["batches"] - before["batches"]
                run["embedded"] = after["queries"] - before["queries"]
                runs[name].append(run)
        for name, parts in runs.items():
            ms = [m for p in parts for m in p["ms"]]
            row = {
                "clients": clients,
                "qps": round(len(ms) / sum(p["wall"] for p in parts), 1),
                **summary(ms),
                "mean_batch": round(
                    sum(p["embedded"] for p in parts) / max(1, sum(p["forwards"] for p in parts)),
                    2,
                ),
            }
            out[name].append(row)
            print(json.dumps({name: row}), file=sys.stderr, flush=True)
    return out


def cold_cli(env: dict, queries: list[str]) -> list[float]:
    ms = []
    for q in queries:
        t0 = time.perf_counter()
        subprocess.run(
            [str(BIN / "corpusmill"), "search", q, "--k", "10", "--json"],
            env=env,
            check=True,
            capture_output=True,
        )
        ms.append((time.perf_counter() - t0) * 1000)
    return ms


def lancedb_floor(db: str, queries: list[str]) -> list[float]:
    """Vector search alone, query vectors computed beforehand (as Searcher.vector asks)."""
    from corpusmill.config import Settings
    from corpusmill.model import Model
    from corpusmill.search import Searcher
    from corpusmill.search.hit import HIT_COLUMNS
    from corpusmill.store.upkeep import ANN_NPROBES

    searcher = Searcher(db, embedder=Model(Settings.from_env().embedder_spec()))
    vectors = searcher.embed_queries(queries)
    table = searcher.table
    ms = []
    for v in vectors:
        t0 = time.perf_counter()
        q = table.search(list(v)).distance_type("cosine").nprobes(ANN_NPROBES)
        q.select(HIT_COLUMNS + ["_distance"]).limit(10).to_list()
        ms.append((time.perf_counter() - t0) * 1000)
    return ms


def batch_queries(env: dict, url: str, queries: list[str]) -> dict:
    import httpx

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        for i, q in enumerate(queries):
            fh.write(json.dumps({"id": i, "text": q}) + "\n")
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(BIN / "corpusmill"), "search", "--queries", fh.name, "--k", "10", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    cli_s = time.perf_counter() - t0
    os.unlink(fh.name)
    assert len(out.stdout.splitlines()) == len(queries)
    t0 = time.perf_counter()
    sequential(url, queries)
    per_request_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    body = {"queries": [{"id": i, "text": q} for i, q in enumerate(queries)], "k": 10}
    r = httpx.post(f"{url}/search/batch", json=body, timeout=600)
    r.raise_for_status()
    batch_s = time.perf_counter() - t0
    return {
        "queries": len(queries),
        "cli_queries_file_s": round(cli_s, 2),
        "one_request_per_query_s": round(per_request_s, 2),
        "one_batch_request_s": round(batch_s, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default="./data/eval-scifact")
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--cold-runs", type=int, default=5, help="cold `corpusmill search` runs")
    p.add_argument("--seconds", type=float, default=8.0, help="per level and server")
    p.add_argument("--rounds", type=int, default=4, help="turns each server takes per level")
    p.add_argument("--levels", default="1,8,32")
    p.add_argument("--batch", type=int, default=1000, help="queries for the --queries test")
    p.add_argument("--quick", action="store_true", help="smaller everything, for a smoke run")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.quick:
        args.latency_queries, args.cold_runs, args.seconds, args.batch = 30, 2, 2.0, 100
    from corpusmill.config import prepare_process

    prepare_process()  # as the `corpusmill` entry point does: passive OpenMP waits, offline
    os.environ["CORPUSMILL_DB"] = args.db
    os.environ.setdefault("LANCEDB_LOG", "error")
    env = {**os.environ, "CORPUSMILL_DB": args.db}
    queries = scifact_queries(max(args.batch, args.latency_queries))
    levels = [int(x) for x in args.levels.split(",")]
    result: dict = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "db": args.db,
    }

    result["lancedb_alone"] = summary(lancedb_floor(args.db, queries[: args.latency_queries]))
    print(json.dumps({"lancedb_alone": result["lancedb_alone"]}), file=sys.stderr)
    with Server(env) as server, Server(env, "--no-microbatch") as plain:
        for url in (server.url, plain.url):
            sequential(url, queries[:20])  # warm: FTS index open, first shapes
        lat = queries[: args.latency_queries]
        result["service"] = summary(sequential(server.url, lat))
        result["service_no_microbatch"] = summary(sequential(plain.url, lat))
        result["service_hybrid"] = summary(sequential(server.url, lat, "hybrid"))
        print(json.dumps({"service": result["service"]}), file=sys.stderr)
        qps = throughput(
            {"microbatch": server.url, "no_microbatch": plain.url},
            queries,
            levels,
            args.seconds,
            args.rounds,
        )
        result["qps_microbatch"], result["qps_no_microbatch"] = (
            qps["microbatch"],
            qps["no_microbatch"],
        )
        result["batch"] = batch_queries(env, server.url, queries[: args.batch])
        print(json.dumps({"batch": result["batch"]}), file=sys.stderr)
    result["cold_cli"] = summary(cold_cli(env, queries[: args.cold_runs]))
    result["service_vs_cold_p50"] = round(
        result["cold_cli"]["p50_ms"] / result["service"]["p50_ms"], 1
    )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
