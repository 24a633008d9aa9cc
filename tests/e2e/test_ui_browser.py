"""The Dagster UI in a real headless Chromium, driven as an operator would.

`make dev`'s services (tools/dev.py: webserver + daemon, over workspace.yaml, on 127.0.0.1)
with a tiny real model and a temp store. In the browser: the lineage graph shows the
assets; "Materialize all" on the `ingest` job, all 16 shards, launches one backfill that
runs as ONE run and succeeds; the `embeddings` asset then shows a shard's own counts (an
observation of that partition) and its three checks passed. Screenshots go to
artifacts/browser/ (git-ignored; CORPUSMILL_ARTIFACTS overrides), kept as CI artifacts.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them); skipped without.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from corpusmill.store import Store
from tests.e2e.procs import REPO, free_port

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium + chromium-driver"),
]
ARTIFACTS = Path(os.environ.get("CORPUSMILL_ARTIFACTS", REPO / "artifacts")) / "browser"


def _wait_http(url: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert proc.poll() is None, "dev services exited while starting"
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.fixture
def ui(cli_env, tmp_path):
    """webserver + daemon (tools/dev.py) on a free loopback port; yields (base URL, env)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"note{i}.txt").write_text(f"note {i}: " + f"words about topic {i} " * 40)
    shutil.copy(REPO / "dagster.yaml", Path(cli_env["DAGSTER_HOME"]) / "dagster.yaml")
    env = {
        **cli_env,
        "CORPUSMILL_SOURCES": str(docs),
        "CORPUSMILL_INBOX": str(tmp_path / "inbox"),
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.dev", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", proc, 180)
        yield f"http://127.0.0.1:{port}", env
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # tools/dev.py stops its services' groups
            proc.wait(timeout=30)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1600,1100")
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.implicitly_wait(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _visible(driver, tag: str, text: str):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.XPATH, f"//{tag}[normalize-space(.)='{text}']")
    return [e for e in found if e.is_displayed()]


def _dismiss_welcome(driver) -> None:
    """Dagster shows a community dialog once per browser profile, whenever it likes."""
    for skip in _visible(driver, "button", "Skip"):
        skip.click()
        time.sleep(0.5)


def _click(driver, tag: str, text: str, seconds: float = 30) -> None:
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        StaleElementReferenceException,
    )

    deadline = time.time() + seconds
    while time.time() < deadline:
        hits = _visible(driver, tag, text)
        if hits:
            try:
                hits[0].click()
                return
            except (ElementClickInterceptedException, StaleElementReferenceException):
                _dismiss_welcome(driver)
        time.sleep(0.3)
    raise AssertionError(f"no clickable <{tag}> {text!r}")


def _body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _wait_text(driver, *texts: str, seconds: float = 60) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        body = _body(driver)
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    raise AssertionError(f"page never showed {texts}: {_body(driver)[:1500]}")


def _open(driver, url: str) -> None:
    driver.get(url)
    time.sleep(2)
    _dismiss_welcome(driver)


def _runs(base: str) -> list[dict]:
    query = "{ runsOrError { ... on Runs { results { runId jobName status } } } }"
    req = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]["runsOrError"]["results"]


def _shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_lineage_launch_all_shards_one_run_then_shard_counts_and_checks(ui, browser):
    base, env = ui
    t0 = time.monotonic()

    # The lineage graph shows the corpus assets.
    _open(browser, f"{base}/locations/definitions.py/asset-groups/corpus")
    _wait_text(browser, "raw_corpus", "chunked_documents", "embeddings", "rerank_scores")
    _shot(browser, "1-lineage")

    # Materialise the ingest job's assets over all 16 shards, from the launch dialog.
    _open(browser, f"{base}/locations/definitions.py/jobs/ingest")
    _wait_text(browser, "raw_corpus", "chunked_documents")
    _click(browser, "button", "Materialize all…")
    _click(browser, "button", "All")
    _wait_text(browser, "16 partitions selected")
    _shot(browser, "2-launch-dialog")
    _click(browser, "button", "Launch backfill")

    # One run (single-run backfill policy) that succeeds.
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = _runs(base)
        if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            break
        time.sleep(2)
    assert [(r["jobName"], r["status"]) for r in runs] == [("ingest", "SUCCESS")]
    _open(browser, f"{base}/runs/{runs[0]['runId']}")
    _wait_text(browser, "Success")
    _shot(browser, "3-run")

    # The embeddings asset: its checks passed...
    _open(browser, f"{base}/assets/embeddings?view=checks")
    body = _wait_text(browser, "vectors_valid", "one_embedding_per_chunk", "model_card_matches")
    assert body.count("Succeeded") >= 3, body[:2000]
    _shot(browser, "4-checks")

    # ...and a shard shows its own row count (an observation), not the run's total.
    rows = Counter(
        Store(env["CORPUSMILL_DB"]).scan("embeddings", ["partition"])["partition"].to_pylist()
    )
    shard, own = rows.most_common(1)[0]
    assert own < sum(rows.values())
    # The events view filtered to this shard's observation, through the filter's URL state
    # (top-level `partitions[0]` and `type[0]`): the unfiltered list is virtualised, and clicking
    # through it found the observation or not depending on where it sorted.
    query = urllib.parse.urlencode(
        {"view": "events", "partitions[0]": shard, "type[0]": "Observation"}
    )
    _open(browser, f"{base}/assets/embeddings?{query}")
    _wait_text(browser, f"Partition {shard} observed", "chunks_embedded")
    lines = _body(browser).splitlines()
    assert "rows" in lines and lines[lines.index("rows") + 1] == str(own), str(lines)
    assert "chunks_embedded" in lines
    _shot(browser, "5-shard-observation")
    print(f"browser test body took {time.monotonic() - t0:.1f} s")
