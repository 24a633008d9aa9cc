"""Fuse a vector list and a full-text list into one ranking (the `hybrid` search mode).

Two fusions, both pure functions of the two ranked lists:

- `convex` (the default): each list's scores min-max normalised per query to [0, 1], then
  `alpha * vector + (1 - alpha) * fulltext`; a hit missing from a list gets 0 there (the
  bottom of that list). Bruch, Gai and Ingber, "An Analysis of Fusion Functions for Hybrid
  Retrieval" (ACM TOIS, 2023) show it beats RRF once alpha is tuned on a few labelled
  queries, because it keeps how far apart the scores are, which ranks throw away.
- `rrf`: reciprocal rank fusion, score = sum of 1 / (k + rank) (Cormack et al., k = 60).

No LanceDB and no model here: `Searcher.hybrid` and bench/tune_fusion.py both call `fuse`,
so the weight is tuned on exactly the function that serves queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from corpusmill.errors import ConfigError

FUSIONS = ("convex", "rrf")
DEFAULT_FUSION = "convex"
RRF_K = 60  # the constant of Cormack et al.; also LanceDB's and most engines' default
# Weight of the vector list in the convex fusion. Chosen by `bench/tune_fusion.py` on the
# SciFact *train* queries only (qrels/train.tsv, 809 queries, grid 0.00..1.00 step 0.05,
# all-MiniLM-L6-v2 bf16 on CPU, 254-token chunks, lists 1,000 deep as `make eval` searches):
# the best train nDCG@10 (0.7255; 0.50 gave 0.7254, 0.40-0.55 within 0.001). The test
# queries were never used to pick it. Run: docs/results/fusion-2026-11-30.json.
CONVEX_ALPHA = 0.45


def rrf_fuse(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank(d))."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return scores


def minmax(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores mapped to [0, 1] by the list's own min and max. A list whose scores are all
    equal (one hit, say) maps to 1: each of its hits is the best that list found."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi <= lo:
        return dict.fromkeys(scores, 1.0)
    return {key: (s - lo) / (hi - lo) for key, s in scores.items()}


def convex_fuse(
    vector: Mapping[str, float], fulltext: Mapping[str, float], alpha: float = CONVEX_ALPHA
) -> dict[str, float]:
    """alpha * minmax(vector) + (1 - alpha) * minmax(fulltext), 0 where a key is absent."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha={alpha} must lie in [0, 1]")
    v, f = minmax(vector), minmax(fulltext)
    return {key: alpha * v.get(key, 0.0) + (1 - alpha) * f.get(key, 0.0) for key in v | f}


def fuse(
    vector: Sequence[tuple[str, float]],
    fulltext: Sequence[tuple[str, float]],
    fusion: str = DEFAULT_FUSION,
    *,
    alpha: float = CONVEX_ALPHA,
    k: int | None = None,
) -> list[tuple[str, float]]:
    """Two best-first lists of (key, score) -> the fused (key, score) list, best first,
    ties broken by key so the order never depends on dict order; the top `k` if given."""
    if fusion == "convex":
        fused = convex_fuse(dict(vector), dict(fulltext), alpha)
    elif fusion == "rrf":
        fused = rrf_fuse([[key for key, _ in vector], [key for key, _ in fulltext]])
    else:
        raise ConfigError(f"fusion={fusion!r} is not one of {FUSIONS}")
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked if k is None else ranked[:k]
