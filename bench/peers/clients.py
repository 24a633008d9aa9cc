"""HTTP clients for the server contenders (stdlib only)."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor


def infinity_embed(
    port: int, texts: list[str], batch: int = 32, concurrency: int = 4
) -> tuple[float, int]:
    """Concurrent batched clients, as infinity is meant to be fed: `concurrency` threads
    each post batches of `batch` texts to /embeddings. Returns (seconds, dimension)."""
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]

    def post(chunk: list[str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request(
            "POST",
            "/embeddings",
            json.dumps({"model": "minilm", "input": chunk}),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        data = json.loads(response.read())
        conn.close()
        if response.status != 200 or len(data["data"]) != len(chunk):
            raise RuntimeError(f"infinity answered {response.status}: {str(data)[:200]}")
        return len(data["data"][0]["embedding"])

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        dims = list(pool.map(post, batches))
    return time.perf_counter() - start, dims[0]


def embed_one_by_one(port: int, texts: list[str]) -> tuple[float, int]:
    """Client: one text per request, one request in flight. Returns (seconds, dimension)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    dim = 0
    start = time.perf_counter()
    for text in texts:
        conn.request(
            "POST", "/embed", json.dumps({"input": text}), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        data = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"chat-shape server answered {response.status}")
        dim = len(data["embedding"])
    seconds = time.perf_counter() - start
    conn.close()
    return seconds, dim
