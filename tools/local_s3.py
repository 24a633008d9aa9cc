"""An S3-compatible server on 127.0.0.1 for the scale demo and the tests: moto's server.

moto (PyPI `moto[server]`) answers the S3 API in-process, conditional puts included, which
is what Lance commits need. It is started as a child process on a free loopback port,
given a bucket, and stopped by its PID. Nothing here is meant for production: there the
store is a real bucket and `CORPUSMILL_STORAGE_OPTIONS` carries its endpoint and keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalS3:
    """`with LocalS3() as s3:` a running server with bucket `s3.bucket`."""

    bucket: str = "corpusmill"
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, str]:
        """What CORPUSMILL_STORAGE_OPTIONS holds for this server (object_store keys)."""
        return {
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "aws_endpoint": self.endpoint,
            "region": "us-east-1",
            "allow_http": "true",
        }

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def start(self) -> LocalS3:
        self.port = self.port or free_port()
        # This interpreter's own moto first: another moto on PATH may be another version.
        own = Path(sys.executable).parent / "moto_server"
        server = str(own) if own.exists() else shutil.which("moto_server") or "moto_server"
        self.proc = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group: stopping it never signals the caller's.
            start_new_session=True,
        )
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on {self.endpoint}") from None
                time.sleep(0.2)
        req = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        urllib.request.urlopen(req, timeout=10)  # create the bucket (moto skips auth)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
