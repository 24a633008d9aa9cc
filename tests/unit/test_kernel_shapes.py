"""The product shapes a run's forward ran, kept for the warm run server to build
(corpusmill/model/kernel_shapes.py): what a run records, and that building them leaves a
forward at those shapes nothing to build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from corpusmill.engine.inputs import collate_packed
from corpusmill.model import bert_cpu, kernel_shapes, packed_linear, probe
from corpusmill.model.encoder import TransformerEncoder
from tests.texts import MIXED_TEXTS

ROOT = Path(__file__).resolve().parents[2]
# The packed forward's fastest dtype here: bf16 where oneDNN runs it (its attention
# products are oneDNN's too), else float32 (only the Linear layers are).
DTYPE = "bfloat16" if packed_linear.supported(torch.bfloat16) else "float32"
TEXTS = MIXED_TEXTS + ["Same length text here."] * 7 + ["x"]


def _record(tmp_path, model_dir, rows, attention, threads=1):
    kernel_shapes.record(
        str(tmp_path),
        f"key-{threads}",
        model_dir=model_dir,
        kind="embedder",
        dtype=DTYPE,
        threads=threads,
        rows=rows,
        attention=attention,
    )
    return probe.read_record(
        probe.record_file(str(tmp_path), kernel_shapes.NAMESPACE, f"key-{threads}")
    )


def test_a_released_model_records_the_shapes_its_forward_ran(tiny_embedder_path, tmp_path):
    from corpusmill.model import Model, ModelSpec

    spec = ModelSpec(path=str(tiny_embedder_path), dtype=DTYPE, cache_dir=str(tmp_path))
    model = Model(spec.with_(forward="bert_cpu")).load()
    model.embed(TEXTS)
    forward = model._encoder._bert_cpu
    rows, attention = sorted(forward.seen_rows), sorted(forward.seen_attention)
    model.release()
    (record,) = kernel_shapes.recorded(str(tmp_path))
    assert record["rows"] == rows and record["attention"] == [list(a) for a in attention]
    assert Path(record["model_dir"]) == Path(tiny_embedder_path)
    assert (record["kind"], record["dtype"]) == ("embedder", DTYPE)
    assert record["machine"] == probe.machine_key({})


def test_a_run_records_its_shapes_first_and_keeps_earlier_ones_within_the_budget(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(kernel_shapes, "WARM_PRODUCTS", 4 * 3 + 2 * 2)  # 3 row counts, 2 groups
    _record(tmp_path, tmp_path, [64, 128], [(12, 10), (12, 20)])
    record = _record(tmp_path, tmp_path, [256, 64], [(24, 30)])
    assert record["rows"] == [64, 256, 128]  # this run's, then the earlier run's
    assert record["attention"] == [[24, 30], [12, 10]]  # what is left of the budget


def test_only_this_machines_one_thread_records_are_warmed(tmp_path):
    _record(tmp_path, tmp_path, [64], [], threads=1)
    _record(tmp_path, tmp_path, [64], [], threads=2)  # kernels for two threads a stream
    other = probe.record_file(str(tmp_path), kernel_shapes.NAMESPACE, "other-machine")
    probe.write_record(
        other,
        {**_record(tmp_path, tmp_path, [64], []), "machine": "another cpu", "recorded_at": 1e12},
    )
    assert [r["threads"] for r in kernel_shapes.recorded(str(tmp_path))] == [1]


def _recorded_shapes(model_dir: Path) -> tuple[dict, list[int], list[tuple[int, int]]]:
    """A batch of mixed lengths and runs of equal ones, and the shapes the forward ran it at."""
    forward = bert_cpu.BertCpuForward.from_folder(model_dir, "embedder", getattr(torch, DTYPE))
    tokens = TransformerEncoder(model_dir, dtype=DTYPE, forward="bert_cpu").tokenize(TEXTS)
    forward(collate_packed(tokens))
    return tokens, sorted(forward.seen_rows), sorted(forward.seen_attention)


_BUILDS = """
import json, sys
import torch
from corpusmill.engine.inputs import collate_packed
from corpusmill.model.bert_cpu import BertCpuForward
torch.set_num_threads(1)  # as a CPU stream runs it, and as the run server warms
model_dir, dtype, warm, tokens, rows, attention = json.loads(sys.stdin.read())
forward = BertCpuForward.from_folder(__import__("pathlib").Path(model_dir), "embedder",
                                     getattr(torch, dtype))
if warm:
    forward.warm(rows, [tuple(a) for a in attention])
print("@@forward", flush=True)
forward(collate_packed(tokens))
"""


def _kernels_built_by_the_forward(model_dir: Path, warm: bool) -> int:
    """In a fresh process with oneDNN's creation log on: the kernels the forward over the
    batch built, after warming its recorded shapes or not."""
    tokens, rows, attention = _recorded_shapes(model_dir)
    out = subprocess.run(
        [sys.executable, "-c", _BUILDS],
        input=json.dumps([str(model_dir), DTYPE, warm, tokens, rows, attention]),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "ONEDNN_VERBOSE": "profile_create"},
    ).stdout
    after = out.split("@@forward", 1)[1]
    return after.count("create:cache_miss")


def test_warming_the_recorded_shapes_leaves_the_forward_no_kernel_to_build(tiny_embedder_path):
    assert _kernels_built_by_the_forward(tiny_embedder_path, warm=False) > 0
    assert _kernels_built_by_the_forward(tiny_embedder_path, warm=True) == 0
