"""How `corpusmill ingest` shows the embeddings step's progress (and a huge document's
chunking).

On a terminal: a tqdm bar (chunks done of total, tokens/s, time left), redrawn in place.
Not on a terminal (a log file, CI): one plain line per progress report on stderr, so logs
stay readable. With --json: nothing, so stdout stays one JSON object and stderr stays empty.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from corpusmill.engine.progress import Progress, ProgressCallback


class _Bar:
    """A tqdm bar created at the first report (that is when the total is known), and again
    when the reports move to another step or unit (a huge document's chunking, then the
    embedding)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: Any = None  # a tqdm bar once the first report arrives
        self.what: tuple[str, str] = ("", "")  # the step and unit the bar shows

    def __call__(self, p: Progress) -> None:
        from tqdm import tqdm

        if self.bar is not None and self.what != (p.step, p.unit):
            self.close()
            self.bar = None
        if self.bar is None:
            self.what = (p.step, p.unit)
            chunking = p.step != "embedded"
            self.bar = tqdm(
                total=p.total or None,
                unit="char" if chunking else "chunk",
                unit_scale=chunking,
                desc=p.step if chunking else "embedding",
                file=self.stream,
                dynamic_ncols=True,
            )
        self.bar.update(p.done - self.bar.n)
        self.bar.set_postfix_str(f"{p.tokens_per_s:,.0f} tokens/s", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def ingest_progress(
    json_output: bool, stream: TextIO | None = None
) -> Iterator[ProgressCallback | None]:
    """The callback for `run_ingest(progress=...)`, or None (--json: stay quiet)."""
    stream = stream or sys.stderr
    if json_output:
        yield None
        return
    if not stream.isatty():
        yield lambda p: print(p.line(), file=stream, flush=True)
        return
    bar = _Bar(stream)
    try:
        yield bar
    finally:
        bar.close()
