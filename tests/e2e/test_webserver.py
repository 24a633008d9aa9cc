"""The Dagster UI as a user reaches it: a real `dagster-webserver` over workspace.yaml.

After a CLI ingest into the same DAGSTER_HOME, the webserver's GraphQL API (what the UI
renders) lists the assets with their 16 shards and dependencies, and the latest
`embeddings` materialisation carries numeric metadata (rows, tokens/s, padding, lineage).
"""

import json
import subprocess
import time
import urllib.request

import pytest

from tests.e2e.procs import BIN, REPO, free_port, run_cli

QUERY = """
{
  assetNodes { assetKey { path } isPartitioned partitionKeys dependencyKeys { path } }
  assetOrError(assetKey: {path: ["embeddings"]}) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        partition
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


@pytest.fixture
def webserver(cli_env):
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        else:
            raise AssertionError("webserver did not come up in 120 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # a dagster-webserver process and a CLI ingest
def test_ui_shows_partitioned_assets_and_truthful_metadata(cli_env, tmp_path, webserver):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"note{i}.txt").write_text(f"note {i}: " + "some words about the topic " * (5 + i))
    summary = json.loads(run_cli(cli_env, "ingest", str(docs), "--json").strip().splitlines()[-1])

    data = graphql(webserver, QUERY)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    for name in ("raw_corpus", "chunked_documents", "embeddings"):
        assert nodes[name]["isPartitioned"]
        assert len(nodes[name]["partitionKeys"]) == 16
    assert [d["path"] for d in nodes["embeddings"]["dependencyKeys"]] == [["chunked_documents"]]

    [latest] = data["assetOrError"]["assetMaterializations"]
    meta = {
        e["label"]: e.get("intValue", e.get("floatValue", e.get("text")))
        for e in latest["metadataEntries"]
    }
    # The materialisation's counts are run-level (one run for 16 shards) and say so.
    assert meta["run_chunks_embedded"] == summary["chunks_embedded"] > 0
    assert meta["run_tokens"] == summary["tokens"] > 0
    assert meta["run_tokens_per_s"] > 0 and 0 <= meta["run_padding_fraction"] < 1
    assert meta["model_load_seconds"] > 0
    assert meta["device"] == "cpu" and meta["dtype"] == "float32"
    assert len(meta["model_revision"]) == 12
    assert "run_gpu" in meta  # says plainly that no GPU was seen
