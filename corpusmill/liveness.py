"""Is a run's worker process still alive? What the inbox sensor asks after a crash.

When the whole machine (daemon, code server and run worker) dies, the run stays STARTED
in Dagster's storage and nothing would fail it until the run timeout (an hour by default,
issue 15). The worker's pid is on the run already: Dagster's launcher records "Started
process for run (pid: N)" as an engine event. A pid that no longer exists, or that now
belongs to a process started after the run began (pids are reused after a reboot), means
the worker is gone. Linux /proc only; elsewhere the answer is "unknown" (None) and the
run timeout decides, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_SLACK_S = 5.0  # the worker starts a moment after the run's start is recorded


def _boot_time(proc: Path) -> float | None:
    try:
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start_time(pid: int, proc: Path = Path("/proc")) -> float | None:
    """Wall-clock start of process `pid`, or None if it does not exist (or no /proc)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    boot = _boot_time(proc)
    if boot is None:
        return None
    # Field 22 (starttime, in clock ticks since boot) counts from the ")" that ends the
    # command name, which may itself hold spaces or parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, run_started_at: float, proc: Path = Path("/proc")) -> bool | None:
    """True if `pid` is the worker of a run that started at `run_started_at` and still runs;
    False if it is gone or the pid now belongs to a later process; None if this machine
    cannot tell (no /proc)."""
    if not (proc / "stat").exists():
        return None
    started = process_start_time(pid, proc)
    if started is None:
        return False
    return started <= run_started_at + _CLOCK_SLACK_S
