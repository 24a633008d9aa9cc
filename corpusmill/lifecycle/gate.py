"""The evaluation gate: a new generation may not go live if it retrieves worse.

With a labelled set configured (`CORPUSMILL_GATE_DATA`, a BEIR folder whose corpus is in
the store under the source `CORPUSMILL_GATE_SOURCE`), promotion searches that corpus with
the labelled queries in both generations, each with its own model, vector mode, and
compares nDCG@10: the candidate passes if it is no more than `CORPUSMILL_GATE_TOLERANCE`
below the live generation. Both figures, the tolerance and the verdict are recorded on the
candidate's registry row, a refusal with its reason.
"""

from __future__ import annotations

from typing import Any

from corpusmill.evaluation.beir import load_beir
from corpusmill.evaluation.metrics import NDCG_K
from corpusmill.evaluation.retrieval import evaluate
from corpusmill.lifecycle.spec import GateSpec
from corpusmill.model.pool import ModelPool
from corpusmill.search import Searcher
from corpusmill.store import Store, eq_filter
from corpusmill.store.generations import Generation

GATE_DEPTH = 100  # chunks per query: nDCG@10 needs far fewer than the eval's 1,000
METRIC = f"ndcg@{NDCG_K}"


def run_gate(
    store: Store, live: Generation, candidate: Generation, pool: ModelPool, spec: GateSpec
) -> dict[str, Any]:
    """The gate's record: both figures, the tolerance, `passed`, and `reason` if not."""
    labelled = load_beir(spec.data, "test")
    record: dict[str, Any] = {
        "metric": METRIC,
        "data": str(labelled.root),
        "source": spec.source,
        "queries": len(labelled.qrels),
        "tolerance": spec.tolerance,
        "live_generation": live.gen_id,
    }
    for role, gen in (("live", live), ("candidate", candidate)):
        chunks = gen.view(store).count("embeddings", eq_filter("source", spec.source))
        if chunks == 0:
            record.update(
                passed=False,
                reason=f"the {role} generation {gen.gen_id} holds no chunks of source "
                f"{spec.source!r}: ingest the gate's corpus (`corpusmill ingest --label "
                f"{spec.source} {labelled.corpus_path}`) or set CORPUSMILL_GATE_SOURCE",
            )
            return record
        model = pool.for_card(gen.card, gen.model_path, what=f"generation {gen.gen_id}")
        searcher = Searcher(store, embedder=model, models=pool, generation=gen.gen_id)
        metrics = evaluate(searcher, labelled, ["vector"], source=spec.source, depth=GATE_DEPTH)
        record[role] = round(float(metrics["vector"][METRIC]), 5)
    floor = record["live"] - spec.tolerance
    record["passed"] = record["candidate"] >= floor
    if not record["passed"]:
        record["reason"] = (
            f"{METRIC} {record['candidate']:.4f} of {candidate.gen_id} is below the live "
            f"generation's {record['live']:.4f} minus the tolerance {spec.tolerance} "
            "(CORPUSMILL_GATE_TOLERANCE)"
        )
    return record
