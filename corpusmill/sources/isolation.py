"""Per-file limits for the formats a third-party parser reads (PDF, Word), and the worker
process that enforces them.

A hostile or broken file can make a parser loop for minutes, recurse until the stack is
gone, allocate until the machine swaps, or crash the interpreter. So, by default, one
long-lived child process per reading process does the parsing: each file gets a hard
time limit (the child is killed and the next file starts a fresh one), an address-space
limit (`RLIMIT_AS`: a bomb raises MemoryError in the child, not in the run), and a crash
there is only that file's quarantine. The extractors also check a deadline between pages,
which stops most slow files with a clearer reason before the hard limit is needed.

The child stays up between files, so a folder of PDFs pays its start-up once; each file
then costs one pipe round trip of its bytes and its text, small beside parsing a page
(`bench/pdf_extract.py`, docs/BENCHMARKS.md). Nothing here imports Dagster.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from corpusmill.sources.document import Extracted

DEFAULT_MAX_PAGES = 5000
DEFAULT_EXTRACT_TIMEOUT_S = 120.0
DEFAULT_EXTRACT_MEMORY_MB = 2048
# What the hard limit adds to the extractor's own deadline, so the cooperative check,
# with its clearer reason, normally fires first.
KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class ReadLimits:
    """Limits on one PDF or Word file. `isolate=False` parses in the calling process
    (deadline checked between pages only, no memory cap, a crash is the caller's)."""

    max_pages: int = DEFAULT_MAX_PAGES
    timeout_s: float = DEFAULT_EXTRACT_TIMEOUT_S
    memory_mb: int = DEFAULT_EXTRACT_MEMORY_MB
    isolate: bool = True


Outcome = Extracted | str  # the text, or why not


def timeout_reason(limits: ReadLimits, where: str = "") -> str:
    return (
        f"extraction took longer than {limits.timeout_s:g} s{where} "
        "(limit: CORPUSMILL_EXTRACT_TIMEOUT)"
    )


def extract(target: str, data: bytes, limits: ReadLimits) -> Outcome:
    """Run `target` ("module:function", called as `function(data, limits)`) on one file's
    bytes under `limits`, in the shared worker unless `limits.isolate` is off."""
    if not limits.isolate:
        return call(target, data, limits)
    return _worker(limits.memory_mb).run(target, data, limits)


def call(target: str, data: bytes, limits: ReadLimits) -> Outcome:
    """`target(data, limits)` with every failure turned into a reason."""
    module, _, name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
        return fn(data, limits)
    except RecursionError:
        return "structure nested too deeply to parse"
    except MemoryError:
        return f"ran out of memory (limit: CORPUSMILL_EXTRACT_MEMORY_MB={limits.memory_mb})"
    except Exception as exc:
        return f"unreadable ({type(exc).__name__}: {_one_line(exc)})"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else "no detail"


class Worker:
    """One child process answering extraction requests one at a time (a lock serialises
    callers from several threads, e.g. a sensor and a run in one code server)."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.started = 0  # processes started so far (a test reads it)
        self.owner = os.getpid()

    def _start(self) -> subprocess.Popen:
        # The parent's import path, so the child imports the same corpusmill (and a
        # test's targets) wherever the parent was started.
        program = (
            f"import sys; sys.path[:] = {sys.path!r}; "
            f"from {__name__} import _serve; _serve({self.memory_mb})"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.started += 1
        return self.proc

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()

    def run(self, target: str, data: bytes, limits: ReadLimits) -> Outcome:
        with self.lock:
            try:
                return self._exchange(target, data, limits)
            except BaseException:  # e.g. Ctrl-C mid-file: a late reply must not answer
                self.stop()  # the next request, so this child goes
                raise

    def _exchange(self, target: str, data: bytes, limits: ReadLimits) -> Outcome:
        for attempt in (1, 2):  # a child that died while idle is replaced once
            proc = self.proc if self.proc and self.proc.poll() is None else self._start()
            try:
                _send(proc.stdin, (target, data, limits))
            except OSError:  # BrokenPipeError included
                self.stop()
                if attempt == 2:
                    return "the extractor process could not be started"
                continue
            deadline = time.monotonic() + limits.timeout_s + KILL_GRACE_S
            try:
                reply = _receive(proc.stdout.fileno(), deadline)  # type: ignore[union-attr]
            except TimeoutError:
                self.stop()
                return timeout_reason(limits)
            except EOFError:
                code = proc.wait()
                self.stop()
                return _death_reason(code, limits)
            if reply is None:  # the child answered and exits (after a MemoryError)
                self.stop()
                return f"ran out of memory (limit: CORPUSMILL_EXTRACT_MEMORY_MB={limits.memory_mb})"
            return reply
        raise AssertionError("unreachable")


def _death_reason(code: int, limits: ReadLimits) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:  # the kernel's OOM killer, most likely
            return f"extractor killed ({name}; memory limit CORPUSMILL_EXTRACT_MEMORY_MB={limits.memory_mb})"
        return f"extractor crashed ({name}) on this file"
    return f"extractor exited with status {code} on this file"


_WORKERS: dict[int, Worker] = {}
_WORKERS_LOCK = threading.Lock()


def _worker(memory_mb: int) -> Worker:
    with _WORKERS_LOCK:
        worker = _WORKERS.get(memory_mb)
        # A forked process inherits the parent's worker and its pipes: never share them.
        if worker is None or worker.owner != os.getpid():
            worker = _WORKERS[memory_mb] = Worker(memory_mb)
        return worker


@atexit.register
def stop_workers() -> None:
    with _WORKERS_LOCK:
        for worker in _WORKERS.values():
            if worker.owner == os.getpid():
                worker.stop()


_HEADER = struct.Struct("!Q")


def _send(stream, obj) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int, deadline: float | None):
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exactly(fd, size, deadline))


def _serve(memory_mb: int) -> None:
    """The child: requests on stdin, replies on stdout, until stdin closes (the parent
    stopped or died, so no child outlives its parent)."""
    import logging
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    warnings.simplefilter("ignore")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed-file chatter
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print in a library must not corrupt the replies
    fd = stdin.fileno()
    while True:
        try:
            target, data, limits = _receive(fd, None)
        except EOFError:
            return
        outcome = call(target, data, limits)
        del data
        if isinstance(outcome, str) and outcome.startswith("ran out of memory"):
            _send(stdout, None)  # this interpreter may be damaged: answer, then go
            return
        try:
            _send(stdout, outcome)
        except MemoryError:
            _send(stdout, None)
            return
