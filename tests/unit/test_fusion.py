"""The two hybrid fusions (corpusmill/search/fusion.py) on hand-made lists."""

import pytest

from corpusmill.errors import ConfigError
from corpusmill.search.fusion import convex_fuse, fuse, minmax, rrf_fuse


def test_minmax_maps_each_list_to_unit_range():
    assert minmax({"a": 3.0, "b": 2.0, "c": 1.0}) == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert minmax({"only": 7.5}) == {"only": 1.0}  # one hit is its list's best
    assert minmax({}) == {}


def test_convex_is_the_weighted_sum_of_normalised_scores_zero_when_absent():
    vector = {"a": 0.9, "b": 0.5, "c": 0.1}  # cosine
    fulltext = {"b": 12.0, "d": 2.0}  # BM25: another scale altogether
    fused = convex_fuse(vector, fulltext, alpha=0.25)
    assert fused == pytest.approx(
        {"a": 0.25 * 1.0, "b": 0.25 * 0.5 + 0.75 * 1.0, "c": 0.0, "d": 0.0}
    )
    assert convex_fuse(vector, fulltext, alpha=1.0) == pytest.approx(
        {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.0}
    )


def test_convex_keeps_score_gaps_that_rrf_throws_away():
    # The vector list barely separates a from b; the full-text list puts b far ahead.
    vector = [("a", 0.80), ("b", 0.79), ("c", 0.10)]
    fulltext = [("b", 30.0), ("a", 5.0), ("c", 4.0)]
    assert [k for k, _ in fuse(vector, fulltext, "convex", alpha=0.5)][:1] == ["b"]
    # RRF sees only ranks, 1+2 against 2+1: a tie.
    rrf = dict(fuse(vector, fulltext, "rrf"))
    assert rrf["a"] == pytest.approx(rrf["b"])


def test_fuse_orders_best_first_ties_by_key_and_cuts_at_k():
    ranked = fuse([("b", 1.0), ("a", 1.0)], [], "convex", alpha=0.5, k=1)
    assert ranked == [("a", 0.5)]
    assert fuse([("x", 1.0)], [("x", 2.0)], "rrf") == [("x", pytest.approx(2 / 61))]
    assert rrf_fuse([["a", "b"], ["b"]])["b"] == pytest.approx(1 / 62 + 1 / 61)


def test_unknown_fusion_and_bad_weight_are_clear_errors():
    with pytest.raises(ConfigError, match="rrf"):
        fuse([], [], "linear")
    with pytest.raises(ConfigError, match="alpha"):
        convex_fuse({}, {}, alpha=1.5)
