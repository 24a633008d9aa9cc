"""Start and stop the loopback servers the benchmark talks to (chat shape, infinity)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INFINITY_VENV = REPO / ".venv-infinity"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A child process serving on 127.0.0.1:port; `start()` waits until `ready_path` answers."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log: Path) -> None:
        self.name, self.argv, self.port, self.ready_path, self.log = (
            name,
            argv,
            port,
            ready_path,
            log,
        )
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self, timeout_s: float = 300) -> None:
        env = dict(
            os.environ,
            DO_NOT_TRACK="1",
            INFINITY_ANONYMOUS_USAGE_STATS="0",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; log: {self.log}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        self.start_seconds = time.perf_counter() - t0
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout_s}s; log: {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def chat_server(port: int, log: Path, model: str = "", dtype: str = "auto") -> Server:
    argv = [
        sys.executable,
        "-m",
        "bench.peers.chat_server",
        "--port",
        str(port),
        "--dtype",
        dtype,
    ] + (["--model", model] if model else [])
    return Server("chat-shape server", argv, port, "/ready", log)


def infinity_unavailable() -> str:
    """Why infinity cannot run here, or '' when it can."""
    exe = INFINITY_VENV / "bin" / "infinity_emb"
    if not exe.exists():
        return f"{exe} is missing: `make bench` installs it (bench/setup_infinity.sh)"
    return ""


def infinity_server(port: int, log: Path, model_path: str, batch_size: int = 32) -> Server:
    """infinity-emb v2 with its defaults (torch engine, dtype auto, batch size 32), on
    loopback only, the model read from its local path."""
    argv = [
        str(INFINITY_VENV / "bin" / "infinity_emb"),
        "v2",
        "--model-id",
        model_path,
        "--served-model-name",
        "minilm",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--batch-size",
        str(batch_size),
        "--log-level",
        "warning",
    ]
    return Server("infinity", argv, port, "/health", log)
