"""Issue 27, item 7: a huge single-line file is chunked in bounded memory, with progress.

`corpusmill ingest` runs in a child process over one 2 MB line (the tiny model, the size
limit raised above the file). The child resets its peak RSS (`/proc/self/clear_refs`) as
the chunking step starts and reports how far the peak rose by its end: the step holds
one window's encodings and the chunks as Arrow columns, never the whole text's
encodings. On the whole-document path this rose by 272 MB for 2 MB; windowed, by 139
(both under load ~25 on the 2-core machine). (The embedding step after it still holds a document's chunks as Python
rows: docs/RELIABILITY.md says what that costs.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bench.huge_input import REPO, write_text
from tests.user_settings import is_user_setting

SIZE = 2 * 1024 * 1024
BOUND_MB = 200

CHILD = """
import sys
import corpusmill.sync as sync

def _peak_mb():
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    return int(status.split()[0]) // 1024

def _rss_mb():
    status = open("/proc/self/status").read().split("VmRSS:")[1]
    return int(status.split()[0]) // 1024

real = sync.sync_chunks

def measured(*args, **kwargs):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS restarts from the RSS now
    before = _rss_mb()
    try:
        return real(*args, **kwargs)
    finally:
        sys.stderr.write(f"CHUNK_STEP_PEAK_MB {_peak_mb() - before}\\n")

sync.sync_chunks = measured  # the asset imports it from corpusmill.sync when it runs
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_huge_single_line_is_chunked_in_bounded_memory_with_progress(
    tmp_path, tiny_embedder_path
):
    path = tmp_path / "huge.txt"
    write_text(path, SIZE, "line")
    assert b"\n" not in path.read_bytes()
    env = {
        **{k: v for k, v in os.environ.items() if not is_user_setting(k) and k != "DAGSTER_HOME"},
        "PYTHONPATH": str(REPO),
        "CORPUSMILL_DB": str(tmp_path / "db"),
        "CORPUSMILL_MODEL": str(tiny_embedder_path),
        "CORPUSMILL_DTYPE": "float32",
        "CORPUSMILL_CHUNK_TOKENS": "56",  # the tiny model's limit: few chunks to embed
        "CORPUSMILL_CHUNK_OVERLAP": "8",
        "CORPUSMILL_MAX_FILE_BYTES": str(SIZE),
    }
    proc = subprocess.run(
        [sys.executable, "-P", "-c", CHILD, "ingest", str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Progress: the chunking step's lines (stderr is not a terminal: plain lines), ending
    # at the whole document.
    chunked = re.findall(r"chunked ([\d,]+)/([\d,]+) characters of (\S+)", proc.stderr)
    assert chunked, proc.stderr[-2000:]
    done, total, uri = chunked[-1]
    assert done == total and int(total.replace(",", "")) >= SIZE
    assert "huge.txt" in uri
    assert "embedded" in proc.stderr  # the embedding step's progress follows
    peaks = [int(m) for m in re.findall(r"CHUNK_STEP_PEAK_MB (-?\d+)", proc.stderr)]
    assert peaks, proc.stderr[-2000:]
    print(f"chunking step: peak RSS rose by {max(peaks)} MB")  # shown with -s
    assert max(peaks) < BOUND_MB, f"the chunking step's peak rose by {max(peaks)} MB"


def test_a_file_over_the_limit_is_refused_up_front_naming_the_setting(tmp_path):
    """Unchanged: over CORPUSMILL_MAX_FILE_BYTES, a file is quarantined with one line that
    names the setting, before it is read."""
    from corpusmill.sources import ReadOptions, read_source

    path = tmp_path / "big.txt"
    path.write_bytes(b"word " * 1000)
    items = list(read_source(str(tmp_path), options=ReadOptions(max_file_bytes=4096)))
    reasons = [getattr(i, "reason", "") for i in items]
    assert any("CORPUSMILL_MAX_FILE_BYTES" in r and "5000 bytes" in r for r in reasons), items
