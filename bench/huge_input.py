"""Peak memory and wall time of `corpusmill ingest` over one huge plain-text file.

Each run is a child `corpusmill ingest --json` (a fresh store, the tiny model from
tools/tiny_models.py over MiniLM's vocabulary, chunks of 24 tokens with 4 of overlap, the
file size limit raised above the file); its peak RSS comes from `os.wait4`. The baseline
is the same command over a one-line file, so `above` is what the document itself cost.
Shapes: `line` (one line of words, no newline), `lines` (80-character lines), `solid`
(one line with no whitespace at all).

    python -m bench.huge_input --mb 5 20 50 --shapes line lines   # one JSON line per run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the code under test: this checkout


def write_text(path: Path, size: int, shape: str, seed: int = 0) -> None:
    """`size` bytes of lowercase pseudo-words (3-9 letters), in the given shape."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(4000)
    ]
    block_words = rng.choices(words, k=20000)
    if shape == "solid":
        block = "".join(block_words)
    elif shape == "lines":
        out, line = [], []
        for w in block_words:
            line.append(w)
            if sum(len(x) + 1 for x in line) >= 80:
                out.append(" ".join(line))
                line = []
        block = "\n".join(out) + "\n"
    else:
        block = " ".join(block_words) + " "
    data = block.encode()
    with path.open("wb") as f:
        written = 0
        while written < size:
            piece = data[: size - written]
            f.write(piece)
            written += len(piece)


# The child reports its own peak (VmHWM) at exit: `ru_maxrss` from wait4 is not it, since a
# child started by vfork+exec inherits the parent's high-water mark.
CHILD = """
import atexit, sys
def _peak():
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    sys.stderr.write(f"\\nVmHWM_MB {int(status.split()[0]) // 1024}\\n")
atexit.register(_peak)
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def ingest_env(
    model: Path, db: Path, limit: int, chunk: tuple[int, int] = (24, 4)
) -> dict[str, str]:
    """What a user of the CLI would set: the tiny model, the chunk size (small by default:
    many chunks per megabyte), the raised limit."""
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CORPUSMILL_") and k != "DAGSTER_HOME"
        },
        "PYTHONPATH": str(REPO),
        "CORPUSMILL_DB": str(db),
        "CORPUSMILL_MODEL": str(model),
        "CORPUSMILL_DTYPE": "float32",
        "CORPUSMILL_CHUNK_TOKENS": str(chunk[0]),
        "CORPUSMILL_CHUNK_OVERLAP": str(chunk[1]),
        "CORPUSMILL_MAX_FILE_BYTES": str(limit),
    }


def ingest(path: Path, env: dict[str, str], *args: str) -> tuple[int, int, str, str]:
    """Run `corpusmill ingest ARGS PATH` in a child: (exit code, peak RSS MB, stdout,
    stderr without the peak line)."""
    proc = subprocess.run(
        [sys.executable, "-P", "-c", CHILD, "ingest", *args, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    head, _, peak = proc.stderr.rpartition("VmHWM_MB ")
    return proc.returncode, int(peak.split()[0]) if peak else -1, proc.stdout, head


def run(path: Path, model: Path, db: Path, limit: int, chunk: tuple[int, int] = (24, 4)) -> dict:
    start = time.monotonic()
    rc, peak, stdout, stderr = ingest(path, ingest_env(model, db, limit, chunk), "--json")
    wall = time.monotonic() - start
    summary = {}
    with contextlib.suppress(ValueError, IndexError):
        summary = json.loads(stdout.strip().splitlines()[-1])
    return {
        "rc": rc,
        "peak_mb": peak,
        "wall_s": round(wall, 1),
        "chunks": summary.get("chunks"),
        "stderr_tail": stderr[-300:] if rc else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, nargs="+", default=[5, 20, 50])
    ap.add_argument("--shapes", nargs="+", default=["line", "lines"])
    ap.add_argument(
        "--chunk",
        default="24,4",
        help="TOKENS,OVERLAP per chunk (the product's default is 200,32; the tiny model "
        "takes up to 126 tokens)",
    )
    args = ap.parse_args()
    tokens, overlap = (int(x) for x in args.chunk.split(","))
    chunk = (tokens, overlap)
    from tools.tiny_models import save_tiny_embedder, write_pooling_files

    with tempfile.TemporaryDirectory(prefix="corpusmill-huge-") as tmp:
        root = Path(tmp)
        model = save_tiny_embedder(root / "model")
        write_pooling_files(model, max_seq=max(64, tokens + 2))  # room for TOKENS
        small = root / "small.txt"
        small.write_text("one short line of text\n")
        base = run(small, model, root / "db-base", 1 << 20, chunk)
        print(json.dumps({"shape": "baseline", "mb": 0, **base}), flush=True)
        for mb in args.mb:
            for shape in args.shapes:
                size = int(mb * 1024 * 1024)
                path = root / f"{shape}-{mb:g}.txt"
                write_text(path, size, shape)
                result = run(path, model, root / f"db-{shape}-{mb:g}", size + 1, chunk)
                result["above_mb"] = result["peak_mb"] - base["peak_mb"]
                print(
                    json.dumps({"shape": shape, "mb": mb, "chunk": args.chunk, **result}),
                    flush=True,
                )
                path.unlink()


if __name__ == "__main__":
    main()
