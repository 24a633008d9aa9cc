"""rerank_scores on Ray against in-process, with a tiny cross-encoder: wall time and the
worker processes the Ray run used (one per actor when the actors live for the run).

Runs `tests/e2e/ray_scenarios.rerank_on_ray` (an in-process run, then the Ray run after
its table is dropped) on a local Ray cluster; a cluster starts only inside a private
network namespace, so run it as root through tools.netns:

    python -m tools.netns -- .venv/bin/python -m bench.rerank_ray
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from corpusmill.config import prepare_process


def main() -> None:
    prepare_process()
    from corpusmill.scale.cluster import ray_cluster
    from tests.e2e.ray_scenarios import rerank_on_ray, write_corpus
    from tools.tiny_models import save_tiny_embedder

    with tempfile.TemporaryDirectory(prefix="rerank-ray-") as tmp:
        work = Path(tmp)
        model = str(save_tiny_embedder(work / "model", seed=0))
        corpus = write_corpus(work / "corpus", 40)
        start = time.monotonic()
        with ray_cluster(num_cpus=4):
            out = rerank_on_ray(corpus, str(work / "db"), {}, model, work)
        meta = out["ray"]["meta"]
        print(
            json.dumps(
                {
                    "seconds_both_runs": round(time.monotonic() - start, 1),
                    "rows_local": len(out["local"]["rows"]),
                    "rows_ray": len(out["ray"]["rows"]),
                    "workers": meta.get("workers"),
                    "worker_processes": meta.get("worker_processes"),
                    "work_units": meta.get("work_units"),
                }
            )
        )


if __name__ == "__main__":
    main()
