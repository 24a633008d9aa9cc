"""`make dev`: the Dagster webserver and the daemon, stopped cleanly on Ctrl-C or SIGTERM.

Why not `dagster dev`: Dagster 1.13 marks it superseded (a warning on every start, pointing
at `dg dev`, which needs a `dg` project layout this repository does not use), and on
SIGTERM it did not exit within a minute: the code servers it spawns live on until their
heartbeat times out. Here the two long-running services Dagster documents for a deployment
(`dagster-webserver` and `dagster-daemon run`) each run in their own process group; on
SIGINT or SIGTERM each group (the service and the code servers it spawned) gets SIGTERM,
and whatever is left after a grace period gets SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 10.0


def _commands(bin_dir: Path, host: str, port: int, workspace: str) -> list[list[str]]:
    return [
        [
            str(bin_dir / "dagster-webserver"),
            *("-h", host, "-p", str(port), "-w", workspace),
            *("--dagster-log-level", "info", "--code-server-log-level", "warning"),
        ],
        [
            str(bin_dir / "dagster-daemon"),
            "run",
            *("-w", workspace, "--log-level", "info", "--code-server-log-level", "warning"),
        ],
    ]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # each was started as the leader of its own group
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    for p in procs:  # the group may hold code servers that outlive their service
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--workspace", default="workspace.yaml")
    args = ap.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    procs: list[subprocess.Popen] = []
    stopping = False

    def on_signal(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for cmd in _commands(bin_dir, args.host, args.port, args.workspace):
            procs.append(subprocess.Popen(cmd, start_new_session=True))
        print(f"corpusmill dev: http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
        while not stopping:
            if any(p.poll() is not None for p in procs):
                print("corpusmill dev: a service exited; stopping the other", file=sys.stderr)
                break
            time.sleep(0.5)
    finally:
        _stop(procs)
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM)]
    return 0 if stopping or not failed else 1


if __name__ == "__main__":
    sys.exit(main())
