"""Errors a user can act on. Each message names the cause and the setting or command that
fixes it; each class has its own exit code, which `corpusmill` returns (README, "Exit
codes"). The message is also what a failed Dagster run shows as its reason.
"""

from __future__ import annotations

EXIT_INTERNAL = 1  # a bug or an unforeseen failure: the message says to rerun with --debug


class CorpusmillError(Exception):
    """Base class for errors corpusmill raises on purpose."""

    exit_code = EXIT_INTERNAL


class UsageError(CorpusmillError, ValueError):
    """A command-line argument or call argument is invalid (`--k 0`, `--candidates 0`)."""

    exit_code = 2


class InputError(CorpusmillError):
    """The input cannot be ingested as asked: a path that does not exist, not a file or a
    folder, no sources at all."""

    exit_code = 3


class ConfigError(CorpusmillError, ValueError):
    """A setting is missing or invalid; the message says which and what is allowed."""

    exit_code = 4


class ModelMismatchError(ConfigError):
    """A table written by one model was asked to take vectors or queries from another."""


class StoreError(CorpusmillError):
    """The store cannot be used: its path is a file or not writable, a table is damaged,
    or the last ingest did not finish."""

    exit_code = 5


class ShardsBusy(StoreError):
    """Another writer holds shards this one asked for without waiting (an inbox run leaves
    a generation that a build is writing to that build)."""


def find_error(exc: BaseException | None) -> CorpusmillError | None:
    """The CorpusmillError that caused `exc`, through wrappers (a Dagster step or
    resource error wraps the asset's own error in `__cause__`/`__context__`)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CorpusmillError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


_DISK_FULL = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT, from Python (errno) or from Lance (a RuntimeError whose text
    carries the OS error: "LanceError(IO): No space left on device (os error 28)")."""
    if isinstance(exc, OSError) and exc.errno in (28, 122):
        return True
    return any(marker in str(exc) for marker in _DISK_FULL)


def store_error(exc: BaseException, uri: str) -> CorpusmillError | None:
    """A LanceDB or file-system failure on the store, as a StoreError; None if `exc` is
    something else. Lance reports damage as RuntimeError/OSError('lance error: ...')."""
    text = str(exc)
    if isinstance(exc, PermissionError) or "Permission denied" in text:
        return StoreError(
            f"cannot write the store at {uri!r}: permission denied; make it writable or "
            "point CORPUSMILL_DB at a directory you can write"
        )
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return StoreError(
            f"the store path {uri!r} is a file, not a directory; point CORPUSMILL_DB at a "
            "directory (it is created if missing)"
        )
    if is_disk_full(exc):
        return StoreError(
            f"no space left on the device holding {uri!r}: the store is intact (a write "
            "that does not fit is never committed); free space and rerun (the rerun "
            "completes the run, nothing is duplicated)"
        )
    if "lance error" in text.lower() or "LanceError" in text:
        first = text.splitlines()[0][:200] if text else type(exc).__name__
        return StoreError(
            f"the store at {uri!r} is damaged or unreadable ({first}); restore it from a "
            "backup or ingest into a new CORPUSMILL_DB"
        )
    return None
