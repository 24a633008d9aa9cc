"""An S3-compatible server on 127.0.0.1 for the scale demo and the tests: moto's server.

moto (PyPI `moto[server]`) answers the S3 API in-process, conditional puts included, which
is what Lance commits need. It is started as a child process on a free loopback port,
given a bucket, and stopped by its PID. Nothing here is meant for production: there the
store is a real bucket and `CORPUSMILL_STORAGE_OPTIONS` carries its endpoint and keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
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
    # Where moto's recorder writes the requests it sees while recording (`recording`).
    record_file: Path | None = field(default=None, repr=False)

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

    def client(self):
        """A boto3 client for this server, made as corpusmill makes its own."""
        from corpusmill.s3 import s3_client

        return s3_client(self.storage_options)

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def start(self) -> LocalS3:
        self.port = self.port or free_port()
        # This interpreter's own moto first: another moto on PATH may be another version.
        own = Path(sys.executable).parent / "moto_server"
        server = str(own) if own.exists() else shutil.which("moto_server") or "moto_server"
        self.record_file = Path(tempfile.mkdtemp(prefix="local-s3-")) / "requests.jsonl"
        self.proc = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_RECORDER_FILEPATH": str(self.record_file)},
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

    def _recorder(self, action: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}", method="POST")
        urllib.request.urlopen(req, timeout=10)

    @contextlib.contextmanager
    def recording(self) -> Iterator[Callable[[], list[tuple[str, str]]]]:
        """`with s3.recording() as seen:` then `seen()` is every (method, path?query) the
        server answered since the block began, from any process: what a test counts to
        show an unchanged bucket costs one listing and no GET. One recording at a time."""
        assert self.record_file is not None, "start the server first"
        self._recorder("reset-recording")
        self._recorder("start-recording")

        def seen() -> list[tuple[str, str]]:
            if not self.record_file or not self.record_file.exists():
                return []
            lines = self.record_file.read_text().splitlines()
            entries = [json.loads(line) for line in lines if line.strip()]
            return [(e["method"], e["url"].split("://", 1)[-1].split("/", 1)[-1]) for e in entries]

        try:
            yield seen
        finally:
            self._recorder("stop-recording")
            self._recorder("reset-recording")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        if self.record_file is not None:
            shutil.rmtree(self.record_file.parent, ignore_errors=True)
            self.record_file = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
