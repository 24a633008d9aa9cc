"""The Ray scenarios, run as one process inside a private network namespace.

`tests/e2e/test_ray_embeddings.py` starts this under `unshare --net` (tools/netns.py), so
the local Ray cluster and the moto S3 server it starts can only be reached over that
namespace's loopback. One process runs every scenario so the cluster starts once (Ray
start-up is most of the cost); it prints one JSON line per scenario for the tests to check.

    python -m tools.netns -- python -m tests.e2e.ray_scenarios MODEL_DIR WORKDIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from corpusmill.config import prepare_process
from tests.events import per_shard
from tests.runs import CHUNKS, tiny_settings

prepare_process()

DIE_BEFORE_COMMIT = "die-before-commit"


def resources(uri, options, model, executor="local", workers=2, address=""):
    """The run's settings (named for what they configure: the resources)."""
    return tiny_settings(
        uri, model, options, executor=executor, ray_workers=workers, ray_address=address
    )


def ingest(corpus, res, partitions=None):
    import dagster as dg

    from app.runs import run_ingest
    from corpusmill.ids import ALL_PARTITIONS

    with dg.DagsterInstance.ephemeral() as instance:
        summary = run_ingest(
            [str(corpus)],
            res,
            partitions=partitions or ALL_PARTITIONS,
            instance=instance,
            chunk_config=CHUNKS,
        )
        summary["shard_observations"] = per_shard(instance, summary["run_id"], "embeddings")
        summary["materialisations"] = per_shard(
            instance, summary["run_id"], "embeddings", "materialization"
        )
        return summary


def rows_per_shard(uri, options):
    from collections import Counter

    from corpusmill.store import Store

    parts = Store(uri, options).scan("embeddings", ["partition"])["partition"].to_pylist()
    return dict(Counter(parts))


def rows(uri, options):
    from corpusmill.store import Store

    table = Store(uri, options).scan("embeddings", ["chunk_id", "content_hash", "vector"])
    return table.to_pylist()


_STARTED = time.monotonic()


def emit(name, **values):
    # elapsed_s: when the scenario ended, from the start of the process (where the time goes).
    elapsed = round(time.monotonic() - _STARTED, 1)
    print(json.dumps({"scenario": name, "elapsed_s": elapsed, **values}), flush=True)


def write_corpus(root: Path, n_docs: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        text = " ".join(f"topic{i} sentence {j} about item {i * j}." for j in range(6 + i % 5))
        (root / f"doc{i:02d}.txt").write_text(text)
    return root


def summary_of(s):
    keys = ("success", "chunks", "chunks_embedded", "rows", "workers", "model_loads", "executor")
    return {k: s[k] for k in keys}


def embed_with_a_worker_that_dies(corpus, uri, options, model) -> dict:
    """The Ray path with `DiesOnceWorker` as the actor class: the first worker to embed
    anything kills its own process once. Called directly (the asset always uses the
    production worker): chunks from a local-path ingest, whose vectors are dropped first."""
    from corpusmill.ids import ALL_PARTITIONS
    from corpusmill.model import Model
    from corpusmill.scale.ray_embed import sync_embeddings_on_ray
    from corpusmill.store import Store
    from tests.e2e.ray_faults import DiesOnceWorker

    res = resources(uri, options, model)
    assert ingest(corpus, res)["success"]
    store = Store(uri, options)
    store.replace_rows(store.open("embeddings"), "chunk_id", None, "true")
    spec = res.embedder_spec()
    embedder = Model(spec)
    report, stats = sync_embeddings_on_ray(
        store,
        spec,
        embedder.card,
        ALL_PARTITIONS,
        run_key="killed-worker",
        workers=2,
        tokenizer_id=embedder.tokenizer_id,
        worker=DiesOnceWorker,
    )
    return {
        "success": bool(stats.commit and stats.commit.committed),
        "chunks_embedded": report.chunks_embedded,
        "worker_processes": stats.worker_processes,
    }


def main_scenarios(model: str, work: Path) -> None:
    import ray

    from corpusmill.ids import ALL_PARTITIONS
    from corpusmill.scale.cluster import ray_cluster
    from tests.e2e.ray_faults import DIE_ONCE_MARKER
    from tools.local_s3 import LocalS3

    corpus = write_corpus(work / "corpus", 40)
    marker = work / "killed-worker"
    # The workers import tests.e2e.ray_faults (the injected worker class) and find the
    # marker it claims: both reach them through the job's runtime_env.
    workers_env = {"PYTHONPATH": str(Path.cwd()), DIE_ONCE_MARKER: str(marker)}
    with LocalS3() as s3, ray_cluster(num_cpus=4, runtime_env={"env_vars": workers_env}):
        opts = s3.storage_options
        local = ingest(corpus, resources(s3.uri("local"), opts, model))
        local_rows = rows(s3.uri("local"), opts)

        killed = embed_with_a_worker_that_dies(corpus, s3.uri("killed"), opts, model)
        emit(
            "killed-worker",
            summary=killed,
            marker=marker.exists(),
            rows=rows(s3.uri("killed"), opts),
            local_rows=local_rows,
        )
        clean = ingest(corpus, resources(s3.uri("ray"), opts, model, "ray"))
        again = ingest(corpus, resources(s3.uri("ray"), opts, model, "ray"))
        emit(
            "ray-vs-local",
            local=summary_of(local),
            ray=summary_of(clean),
            rerun=summary_of(again),
            rows=rows(s3.uri("ray"), opts),
            local_rows=local_rows,
            shards=clean["shard_observations"],
            local_shards=local["shard_observations"],
            materialisations=clean["materialisations"],
            rows_per_shard=rows_per_shard(s3.uri("ray"), opts),
        )

        emit("rerank-on-ray", **rerank_on_ray(corpus, s3.uri("rerank"), opts, model, work))

        # Another model (another dimension) on the Ray path: its generation is built
        # beside the live one through the store's view, then goes live.
        from corpusmill.store import Store
        from corpusmill.store.generations import read_registry
        from tools.tiny_models import save_tiny_embedder

        model_b = str(save_tiny_embedder(work / "model-b", seed=5, width=48))
        built = ingest(corpus, resources(s3.uri("ray"), opts, model_b, "ray"))
        store = Store(s3.uri("ray"), opts)
        registry = read_registry(store)
        view = registry.get(built["generation"]).view(store)
        emit(
            "generation-on-ray",
            summary=summary_of(built),
            live=registry.live,
            generation=built["generation"],
            previous=registry.previous,
            live_rows=[r["chunk_id"] for r in rows(s3.uri("ray"), opts)],
            rows=view.scan("embeddings", ["chunk_id"])["chunk_id"].to_pylist(),
            dimension=view.open("embeddings").schema.field("vector").type.list_size,
        )

        results = []
        halves = (ALL_PARTITIONS[:8], ALL_PARTITIONS[8:])
        # A fresh store: both runs create its tables at once (serialised by the `create`
        # lease, Store._create) and hold their shards' leases while they write.

        def run_half(parts):
            res = resources(s3.uri("shared"), opts, model, "ray", workers=1)
            results.append(summary_of(ingest(corpus, res, parts)))

        threads = [threading.Thread(target=run_half, args=(h,)) for h in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        emit("disjoint-writers", runs=results, rows=rows(s3.uri("shared"), opts))

        # A driver killed after its workers wrote fragments, before the commit: a child
        # process on the same cluster, whose commit step is replaced by an exit (here, in
        # the test harness, not in corpusmill).
        address = ray.get_runtime_context().gcs_address
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.e2e.ray_scenarios",
                DIE_BEFORE_COMMIT,
                model,
                str(corpus),
                s3.uri("crash"),
                json.dumps(opts),
                address,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        visible = rows(s3.uri("crash"), opts)
        files = _data_files(s3, "crash/embeddings.lance/data/")
        rerun = ingest(corpus, resources(s3.uri("crash"), opts, model, "ray"))
        emit(
            "driver-killed",
            child_exit=child.returncode,
            child_tail=child.stderr[-2000:],
            visible_before_rerun=len(visible),
            orphan_data_files=files,
            rerun=summary_of(rerun),
            rows=rows(s3.uri("crash"), opts),
        )


def rerank_on_ray(corpus, uri, options, model, work: Path) -> dict:
    """rerank_scores with a tiny cross-encoder, in-process, then again on the Ray path (its
    pairs scored by `ScoreWorker` actors) after its table is dropped: both runs' rows."""
    import dagster as dg

    from app.runs import run_ingest
    from corpusmill.store import Store
    from tests.events import per_shard
    from tools.tiny_models import save_tiny_cross_encoder

    cross = str(save_tiny_cross_encoder(work / "cross", seed=1))
    queries = work / "queries.jsonl"
    texts = {"q1": "topic3 sentence", "q2": "item 12", "q3": "about topic7"}
    queries.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))
    columns = ["score_id", "query_id", "chunk_id", "partition", "scorer", "rank", "score"]
    out: dict = {}
    for executor in ("local", "ray"):
        if executor == "ray":
            Store(uri, options).drop_table("rerank_scores")
        res = tiny_settings(uri, model, options, executor=executor, reranker=cross)
        with dg.DagsterInstance.ephemeral() as instance:
            summary = run_ingest(
                [str(corpus)],
                res,
                instance=instance,
                chunk_config=CHUNKS,
                with_rerank=True,
                rerank_config={"queries": str(queries), "rerank_k": 3},
            )
            meta = per_shard(instance, summary["run_id"], "rerank_scores", "materialization")
        rows = Store(uri, options).scan("rerank_scores", columns).to_pylist()
        out[executor] = {
            "success": summary["success"],
            "rows": rows,
            "meta": next(iter(meta.values()), {}),
        }
    return out


def _data_files(s3, prefix: str) -> int:
    import re
    import urllib.request

    url = f"{s3.endpoint}/{s3.bucket}?list-type=2&prefix={prefix}"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    return len(re.findall(r"<Key>[^<]+\.lance</Key>", body))


def die_before_commit(model, corpus, uri, options, address) -> None:
    from corpusmill.store import Store

    def exit_instead(_store, _name, fragments, *args, **kwargs):
        sys.stderr.write(f"fragments written: {len(fragments)}; exiting before the commit\n")
        sys.stderr.flush()
        os._exit(17)

    Store.commit_fragments = exit_instead
    ingest(corpus, resources(uri, json.loads(options), model, "ray", address=address))


if __name__ == "__main__":
    if sys.argv[1] == DIE_BEFORE_COMMIT:
        die_before_commit(*sys.argv[2:7])
    else:
        main_scenarios(sys.argv[1], Path(sys.argv[2]))
