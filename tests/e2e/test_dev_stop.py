"""`make dev` stops cleanly: SIGTERM (what Ctrl-C's SIGINT also triggers) to its process
group ends the webserver, the daemon and the code servers they spawned within 15 s."""

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.e2e.procs import REPO, free_port


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.slow
def test_make_dev_exits_on_sigterm_with_nothing_left(cli_env, tmp_path):
    port = free_port()
    home = cli_env["DAGSTER_HOME"]  # every child's command line names it (instance ref)
    env = {**cli_env, "CORPUSMILL_INBOX": str(tmp_path / "inbox")}
    proc = subprocess.Popen(
        ["make", "dev", f"DEV_PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "make dev exited while starting"
                time.sleep(0.5)
        else:
            raise AssertionError("the webserver did not come up in 180 s")
        assert _alive(home), "no dagster process names the instance"
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        while _alive(home) and time.monotonic() - t0 < 15:
            time.sleep(0.2)
        assert not _alive(home), "processes left after 15 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
