"""Listing an `s3://` inbox: what a sensor tick over a bucket of N objects costs (issue 24).

    python -m bench.s3_listing [--objects 10000] [--rounds 3]

Starts moto's S3 server on 127.0.0.1 (tools/local_s3.py), puts N small text objects under
one prefix (100 "folders"), then measures, in rotated order each round:

- `listing`: the paginated listing alone (`sources.objects.list_objects`, 1,000 keys a
  request), every object's key, ETag and size;
- `tick, warm`: a sensor tick of an unchanged bucket with the code server's cache filled
  (`inbox.scan_inbox`): the listing plus one signature comparison per object;
- `tick, cold, store knows`: the same with an empty cache (a code server just started)
  and the committed state a store holding these documents would give (`Committed`, with
  each document's signature): still no GET.

Once: the first tick of an empty store (every object fetched and read), the requests the
server saw during a cold tick (moto's recorder), and the Python memory a cold tick holds at
its peak and keeps in its result (tracemalloc), per object. Results are printed and written
to bench/out/s3_listing.json.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

from bench.report import save, spread
from corpusmill.inbox import Committed, StatCache, scan_inbox
from corpusmill.sources import ReadOptions
from corpusmill.sources.objects import list_objects, signature
from tools.local_s3 import LocalS3

PREFIX = "bench-inbox"


def put_objects(s3: LocalS3, n: int) -> None:
    client = s3.client()

    def put(i: int) -> None:
        body = f"object {i}: a short text file of the benchmark inbox, line {i % 97}.\n"
        client.put_object(Bucket=s3.bucket, Key=f"{PREFIX}/d{i % 100:02}/f{i:06}.txt", Body=body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(n)))


def committed_state(s3: LocalS3, options: ReadOptions) -> Committed:
    """What `read_committed` gives for a store holding every object as it is now: each
    document's uri, hash and signature (read once, as the first tick does)."""
    listing = scan_inbox(s3.uri(PREFIX), options)
    client = s3.client()
    sigs = {
        f"inbox#{o.key}": signature(o.etag, o.size) for o in list_objects(client, s3.bucket, PREFIX)
    }
    return Committed(
        documents={d: (seen.uri, seen.content_hash) for d, seen in listing.docs.items()},
        signatures=sigs,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    with LocalS3() as s3:
        t0 = time.perf_counter()
        put_objects(s3, args.objects)
        setup = time.perf_counter() - t0
        options = ReadOptions(storage_options=s3.storage_options)
        uri = s3.uri(PREFIX)
        client = s3.client()

        t0 = time.perf_counter()
        first = scan_inbox(uri, options)
        first_tick = time.perf_counter() - t0
        assert first.files == first.files_read == args.objects, first.files
        committed = committed_state(s3, options)
        warm_cache = StatCache()
        scan_inbox(uri, options, cache=warm_cache, committed=committed)

        def listing() -> int:
            return sum(1 for _ in list_objects(client, s3.bucket, PREFIX))

        def warm() -> int:
            out = scan_inbox(uri, options, cache=warm_cache, committed=committed)
            assert out.files_read == 0
            return out.files

        def cold() -> int:
            out = scan_inbox(uri, options, cache=StatCache(), committed=committed)
            assert out.files_read == 0
            return out.files

        cases = {"listing": listing, "tick, warm": warm, "tick, cold, store knows": cold}
        times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                assert cases[name]() == args.objects
                times[name].append(time.perf_counter() - t0)

        with s3.recording() as seen:
            cold()
            requests = seen()
        lists = sum(1 for m, p in requests if m == "GET" and "list-type=2" in p)
        gets = sum(1 for m, p in requests if m == "GET" and "list-type=2" not in p)

        # The committed state a tick is given, rebuilt from fresh strings as read_committed
        # builds it (ids shared by the documents and signature maps).
        blob = json.dumps(
            [[d, u, h, committed.signatures[d]] for d, (u, h) in committed.documents.items()]
        )
        tracemalloc.start()
        rows = json.loads(blob)
        rebuilt = Committed(
            documents={d: (u, h) for d, u, h, _s in rows},
            signatures={d: sig for d, _u, _h, sig in rows},
            # From the embeddings scan: its own strings.
            embedded={d: frozenset({(h + " ")[:-1]}) for d, _u, h, _s in rows},
        )
        del rows
        state, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(rebuilt.documents) == args.objects
        del rebuilt

        tracemalloc.start()
        held = scan_inbox(uri, options, cache=StatCache(), committed=committed)
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert held.files == args.objects and not held.docs

    results = {
        "objects": args.objects,
        "rounds": args.rounds,
        "setup_put_seconds": round(setup, 1),
        "seconds": {name: spread(ts, 3) for name, ts in times.items()},
        "objects_per_s": {
            name: spread([args.objects / t for t in ts], 0) for name, ts in times.items()
        },
        "first_tick_empty_store_seconds": round(first_tick, 2),
        "cold_tick_requests": {"list": lists, "get": gets, "all": len(requests)},
        # Python memory a cold tick allocates beyond the committed state it is given: at
        # its peak (one listing page in flight included), and what its result keeps.
        "cold_tick_peak_python_bytes_per_object": round(peak / args.objects),
        "cold_tick_result_python_bytes_per_object": round(retained / args.objects),
        "committed_state_python_bytes_per_object": round(state / args.objects),
    }
    for key, value in results.items():
        print(f"{key}: {json.dumps(value)}")
    save("s3_listing", results)


if __name__ == "__main__":
    main()
