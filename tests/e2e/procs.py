"""Helpers for tests that run corpusmill, the webserver or the daemon as processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def with_checkout(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child that runs checkout modules (`python -m app.cli`, `tests.e2e...`):
    only the `corpusmill` core is installed, so the checkout goes on its PYTHONPATH and the
    child finds app/ and the code location from any working directory."""
    path = [str(REPO), *filter(None, [env.get("PYTHONPATH", "")])]
    return {**env, "PYTHONPATH": os.pathsep.join(path)}


def run_cli(env, *args, timeout=300) -> str:
    out = subprocess.run(
        [str(BIN / "corpusmill"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
