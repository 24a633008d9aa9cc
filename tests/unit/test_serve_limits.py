"""The service's back-pressure budgets (app/limits.py): pure logic, no HTTP, no model."""

from __future__ import annotations

import pytest

from app.limits import Admission, Limits
from corpusmill.config import Settings
from corpusmill.errors import ConfigError


def limits(**kw) -> Limits:
    base = {"max_inflight": 2, "max_inflight_tokens": 100, "max_inputs": 8}
    return Limits(**{**base, "max_request_tokens": 100, **kw})


def test_requests_past_the_bound_are_refused_until_one_leaves():
    a = Admission(limits())
    assert a.try_enter() and a.try_enter()
    assert not a.try_enter()
    a.leave()
    assert a.try_enter() and a.requests == 2 and a.peak_requests == 2


def test_tokens_past_the_budget_are_refused_until_released():
    a = Admission(limits())
    assert a.try_reserve(60)
    assert not a.try_reserve(41)
    assert a.try_reserve(40) and a.tokens == 100
    a.release(60)
    assert a.tokens == 40 and a.try_reserve(60)


def test_retry_after_follows_the_recent_rate(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("app.limits.time.monotonic", lambda: now[0])
    a = Admission(limits(max_inflight_tokens=10_000, max_request_tokens=10_000))
    assert a.retry_after_s() == 1  # nothing measured yet
    a.try_reserve(100)
    a.release(100)  # 100 tokens answered at t=1000
    now[0] = 1002.0  # ...over 2 s: 50 tokens/s
    assert a.try_reserve(500)
    assert a.retry_after_s() == 10  # 500 in flight at 50/s
    assert a.try_reserve(9000)
    assert a.retry_after_s() == 60  # capped


def test_the_settings_give_the_limits_and_refuse_a_request_that_could_never_fit():
    got = Limits.from_settings(Settings(serve_max_inflight=5, serve_max_inputs=7))
    assert (got.max_inflight, got.max_inputs) == (5, 7)
    env = Settings.from_env({"CORPUSMILL_SERVE_MAX_INFLIGHT_TOKENS": "1000",
                             "CORPUSMILL_SERVE_MAX_REQUEST_TOKENS": "1000"})  # fmt: skip
    assert env.serve_max_inflight_tokens == env.serve_max_request_tokens == 1000
    with pytest.raises(ConfigError, match="never be admitted"):
        Settings(serve_max_request_tokens=10, serve_max_inflight_tokens=5)
    with pytest.raises(ConfigError, match="CORPUSMILL_SERVE_MAX_INFLIGHT"):
        Settings(serve_max_inflight=0)
