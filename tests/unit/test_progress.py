"""Live progress: the meter's rhythm, its numbers, and the engine advancing it.

The engine tests use the labelled FAKE hash encoder (tests/fakes.py): what is tested is
when and how often the callback fires, not any vectors.
"""

from __future__ import annotations

import io

from app.progress import ingest_progress
from corpusmill.engine.progress import Progress, ProgressMeter, format_seconds
from corpusmill.engine.runner import BatchEngine
from tests.fakes import FakeHashEncoder


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_reports_every_interval_not_every_batch():
    clock, seen = Clock(), []
    meter = ProgressMeter(seen.append, total=100, every_s=5.0, clock=clock)
    for _ in range(10):  # 10 batches of 10 items over 10 s: one report per 5 s
        clock.now += 1.0
        meter.advance(10, 40)
    meter.finish()
    assert [p.done for p in seen] == [50, 100, 100]
    assert [p.final for p in seen] == [False, False, True]
    assert seen[0].seconds == 5.0 and seen[0].tokens == 200
    assert seen[0].tokens_per_s == 40.0
    assert seen[0].eta_s == 5.0  # 50 left at 10 items/s


def test_meter_reports_every_n_batches_when_asked():
    seen = []
    meter = ProgressMeter(seen.append, total=0, every_batches=3, clock=Clock())
    for _ in range(7):
        meter.advance(2, 5)
    assert [p.done for p in seen] == [6, 12]
    assert seen[0].eta_s is None  # no total: no ETA, no percentage
    assert "embedded 6 chunks" in seen[0].line()


def test_a_failing_callback_does_not_stop_the_meter():
    def broken(_p):
        raise RuntimeError("display gone")

    meter = ProgressMeter(broken, total=3, every_batches=1)
    meter.advance(3, 9)
    meter.finish()
    assert meter.calls == 2 and meter.done == 3


def test_line_says_done_of_total_rate_and_time_left():
    p = Progress(done=1200, total=5000, tokens=34000, seconds=10.0)
    assert p.line() == "embedded 1,200/5,000 chunks (24%), 3,400 tokens/s, ~32s left"
    final = Progress(done=5000, total=5000, tokens=99000, seconds=75.0, final=True)
    assert final.line().endswith("done in 1m 15s")
    assert format_seconds(3725) == "1h 02m"


def test_engine_advances_the_meter_per_batch_and_finishes_with_every_item():
    enc = FakeHashEncoder()  # FAKE encoder: counts batches
    texts = [" ".join(["word"] * (1 + i % 7)) for i in range(200)]
    seen: list[Progress] = []
    meter = ProgressMeter(seen.append, total=len(texts), every_batches=2)
    stats = BatchEngine(enc, max_batch_tokens=64, window=50).run(
        texts, sink=lambda *_: None, progress=meter
    )
    batches = len(enc.batches)
    assert batches == stats.batches > 10
    periodic = [p for p in seen if not p.final]
    assert len(periodic) == batches // 2  # exactly one report per two batches
    assert all(b.done > a.done for a, b in zip(periodic, periodic[1:], strict=False))
    assert seen[-1].final and seen[-1].done == 200 and seen[-1].tokens == stats.real_tokens


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_progress_is_a_bar_on_a_terminal_lines_elsewhere_and_silent_with_json():
    p = Progress(done=10, total=40, tokens=500, seconds=2.0)
    with ingest_progress(json_output=True, stream=_Tty()) as cb:
        assert cb is None
    plain = io.StringIO()
    with ingest_progress(json_output=False, stream=plain) as cb:
        cb(p)
    assert plain.getvalue() == p.line() + "\n"
    tty = _Tty()
    with ingest_progress(json_output=False, stream=tty) as cb:
        cb(p)
        cb(Progress(done=40, total=40, tokens=2000, seconds=4.0, final=True))
    drawn = tty.getvalue()
    assert "40/40" in drawn and "\r" in drawn and "tokens/s" in drawn


def test_a_huge_documents_chunking_gets_its_own_line_and_bar_before_the_embedding():
    chunked = Progress(
        done=300, total=1200, tokens=90, seconds=1.0, step="chunked", unit="characters of a.txt"
    )
    assert chunked.line().startswith("chunked 300/1,200 characters of a.txt (25%)")
    tty = _Tty()
    with ingest_progress(json_output=False, stream=tty) as cb:
        cb(chunked)
        cb(Progress(done=10, total=40, tokens=500, seconds=2.0))
    drawn = tty.getvalue()
    assert "chunked" in drawn and "embedding" in drawn and "10/40" in drawn
