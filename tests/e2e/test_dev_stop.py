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


def _start(env: dict, log) -> tuple[subprocess.Popen, int] | None:
    """`make dev` on a free port, once its webserver answers; None if the port was taken
    between `free_port` and the webserver's bind (another test's server, on the other
    worker), which the log says."""
    port = free_port()
    log.seek(0)
    log.truncate()
    proc = subprocess.Popen(
        ["make", "dev", f"DEV_PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                output = log.read()
                if "address already in use" in output.lower():
                    return None
                raise AssertionError(f"make dev exited while starting:\n{output[-3000:]}") from None
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the webserver did not come up in 180 s")


@pytest.mark.slow
def test_make_dev_exits_on_sigterm_with_nothing_left(cli_env, tmp_path):
    home = cli_env["DAGSTER_HOME"]  # every child's command line names it (instance ref)
    env = {**cli_env, "CORPUSMILL_INBOX": str(tmp_path / "inbox")}
    with open(tmp_path / "dev.log", "w+") as log:
        started = _start(env, log) or _start(env, log)  # a second port if the first was taken
    assert started is not None, "two free ports were taken before the webserver bound them"
    proc, _port = started
    try:
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
