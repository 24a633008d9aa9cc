"""What a model migration costs, and what it costs readers.

    make bench-generations   # = python -m bench.generations --docs 300 --rounds 2

1. **Migration against a fresh ingest.** A store holds SciFact documents embedded by model A
   (the packaged MiniLM-L6). Model B is configured (a copy of MiniLM with one weight moved
   by 1e-4: another revision, so another generation, at exactly A's cost per token), and
   `corpusmill generations build` builds B's generation beside A's and promotes it: timed.
   Beside it, in the same round, the same corpus is ingested into an empty store with B:
   timed. Rounds rotate the order; the ratio is paired within a round.
2. **Search during a build against search at rest.** On a store with A live, the SciFact
   test queries are searched (vector and hybrid, k=10, a fresh pin per query as the service
   does) at rest, then again while a separate process builds B's generation (the queries
   start at the build's first commit, its first chunks, and run until it ends), then at
   rest again. Every answer during the build must come from A.

Writes bench/out/generations-<date>.json and prints one line per figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus_texts import SCIFACT, read_docs

OUT = Path(__file__).parent / "out"


def settings_for(db: str, model: str, **extra):
    from corpusmill.config import Settings

    return Settings(db=db, model=model, sources=(), **extra)


def retouched_minilm(dest: Path) -> Path:
    """MiniLM with one weight moved by 1e-4: another model card, the same speed."""
    import torch
    from safetensors.torch import load_file, save_file

    from corpusmill.model.files import default_model_path

    shutil.copytree(default_model_path(), dest)
    weights = load_file(str(dest / "model.safetensors"))
    words = weights["embeddings.word_embeddings.weight"].clone()
    words[1000, 0] += torch.tensor(1e-4, dtype=words.dtype)
    weights["embeddings.word_embeddings.weight"] = words
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def ingest(sources: list[str], settings, job: str = "ingest") -> dict:
    """A run of `job`, with its wall time and each step's seconds (`steps`)."""
    import dagster as dg

    from app.runs import run_ingest

    with dg.DagsterInstance.ephemeral() as instance:
        t0 = time.perf_counter()
        summary = run_ingest(sources, settings, job=job, instance=instance)
        summary["wall_seconds"] = round(time.perf_counter() - t0, 2)
        summary["steps"] = {
            r.step_key: round(r.dagster_event.event_specific_data.duration_ms / 1000, 2)
            for r in instance.all_logs(summary["run_id"], of_type=dg.DagsterEventType.STEP_SUCCESS)
        }
    assert summary["success"], summary
    return summary


def migration_rounds(root: Path, corpus: str, model_b: str, rounds: int) -> list[dict]:
    out = []
    for r in range(rounds):
        base = str(root / f"round{r}-base")
        ingest([corpus], settings_for(base, ""))  # A: the live generation to migrate from
        fresh_db = str(root / f"round{r}-fresh")
        order = ["migration", "fresh"] if r % 2 == 0 else ["fresh", "migration"]
        got: dict[str, dict] = {}
        for what in order:
            if what == "migration":
                got[what] = ingest([], settings_for(base, model_b), job="build_generation")
                assert got[what]["live_generation"] == got[what]["generation"]  # promoted
            else:
                got[what] = ingest([corpus], settings_for(fresh_db, model_b))
        row = {
            "round": r,
            "order": order,
            **{
                f"{k}_{field}": got[k][field]
                for k in got
                for field in ("wall_seconds", "chunks_embedded", "documents", "tokens", "steps")
            },
            "ratio": round(got["migration"]["wall_seconds"] / got["fresh"]["wall_seconds"], 3),
        }
        print(json.dumps(row), flush=True)
        out.append(row)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(fresh_db, ignore_errors=True)
    return out


def _queries(limit: int) -> list[str]:
    from corpusmill.evaluation.beir import load_beir

    return list(load_beir(SCIFACT.parent, "test", limit).queries.values())


def timed_searches(searcher, queries, modes, until=None) -> dict[str, list[float]]:
    """ms per search, per mode; with `until` (a process), cycles until it has exited."""
    times: dict[str, list[float]] = {m: [] for m in modes}
    generations = set()
    while True:
        for q in queries:
            for mode in modes:
                t0 = time.perf_counter()
                view = searcher.pinned()
                view.search(q, k=10, mode=mode)
                times[mode].append((time.perf_counter() - t0) * 1000)
                generations.add(view.generation.gen_id)
            if until is not None and until.poll() is not None:
                return {**times, "generations": sorted(generations)}  # type: ignore[dict-item]
        if until is None:
            return {**times, "generations": sorted(generations)}  # type: ignore[dict-item]


def summary_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def latency(root: Path, corpus: str, model_b: str, n_queries: int) -> dict:
    from corpusmill.model import Model
    from corpusmill.search import Searcher

    db = str(root / "latency")
    ingest([corpus], settings_for(db, ""))
    searcher = Searcher(db, embedder=Model(settings_for(db, "").embedder_spec()))
    live = searcher.pinned().generation.gen_id
    queries = _queries(n_queries)
    modes = ("vector", "hybrid")
    timed_searches(searcher, queries[:5], modes)  # warm: model loaded, caches filled
    rest = timed_searches(searcher, queries, modes)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.generations", "_build", db, model_b],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # the build's first commit
    assert line.startswith("building"), line
    during = timed_searches(searcher, queries, modes, until=child)
    child.wait()
    assert during["generations"] == [live], during["generations"]  # every answer from A
    after = timed_searches(searcher, queries, modes)
    result = {"queries": len(queries), "live": live}
    for mode in modes:
        result[mode] = {
            "rest_before": summary_ms(rest[mode]),
            "during_build": summary_ms(during[mode]),
            "rest_after": summary_ms(after[mode]),
        }
        r = result[mode]
        r["p50_ratio"] = round(r["during_build"]["p50"] / r["rest_before"]["p50"], 2)
        print(json.dumps({"mode": mode, **r}), flush=True)
    return result


def _build(db: str, model_b: str) -> None:
    """The child of `latency`: B's generation built (manual promotion), saying "building"
    at its first commit (B's first chunks: the embedding starts right after)."""
    from app.runs import run_ingest
    from corpusmill.config import prepare_process

    prepare_process()
    said = []

    def on_commit(table: str) -> None:
        if table.startswith(("chunks_", "embeddings_")) and not said:
            said.append(table)
            print("building", flush=True)

    run_ingest(
        [],
        settings_for(db, model_b, promote="manual"),
        job="build_generation",
        on_commit=on_commit,
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        _build(sys.argv[2], sys.argv[3])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=300, help="SciFact documents in the corpus")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--queries", type=int, default=100, help="SciFact test queries per pass")
    args = p.parse_args()

    from corpusmill.config import prepare_process, quiet_lance_query_warnings

    prepare_process()
    quiet_lance_query_warnings()
    root = Path(tempfile.mkdtemp(prefix="bench-generations-"))
    try:
        name, docs = read_docs(args.docs)
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
        source = f"scifact={corpus}"
        model_b = str(retouched_minilm(root / "minilm-retouched"))
        load = os.getloadavg()
        result = {
            "date": dt.date.today().isoformat(),
            "corpus": name,
            "load_before": [round(x, 2) for x in load],
            "migration": migration_rounds(root, source, model_b, args.rounds),
            "latency": latency(root, source, model_b, args.queries),
            "load_after": [round(x, 2) for x in os.getloadavg()],
        }
        ratios = [r["ratio"] for r in result["migration"]]
        result["migration_ratio_median"] = statistics.median(ratios)
        OUT.mkdir(exist_ok=True)
        path = OUT / f"generations-{result['date']}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"migration / fresh ingest: {statistics.median(ratios)} {ratios}; wrote {path}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
