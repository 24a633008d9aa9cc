"""ONNX Runtime on the CPU, the way fastembed-style libraries run MiniLM: fp32 and int8.

The packaged model is exported here with `torch.onnx.export` (no download), once per
weights fingerprint, into bench/out/onnx/; int8 is ONNX Runtime's dynamic quantisation of
that same file (`quantize_dynamic`, its defaults: int8 weights, activations quantised per
batch). Inference as those libraries do it: the model's fast tokenizer, texts sorted by
length, batches of 32 padded to their longest text, mean pooling and normalisation in
numpy, one session with as many intra-op threads as cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "bench" / "out" / "onnx"


def export(model_dir: Path, fingerprint: str) -> dict[str, Path]:
    """fp32 and int8 ONNX files for `model_dir`, exported on first use and cached."""
    out = CACHE / fingerprint[:16]
    files = {"fp32": out / "model.onnx", "int8": out / "model_int8.onnx"}
    if all(p.exists() for p in files.values()):
        return files
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    out.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True)
    model.eval()

    class Hidden(torch.nn.Module):  # the last hidden state only, as a plain tensor
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    tmp = files["fp32"].with_suffix(".tmp.onnx")
    torch.onnx.export(
        Hidden(model),
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(tmp),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={n: axes for n in ("input_ids", "attention_mask", "token_type_ids")}
        | {"last_hidden_state": axes},
        opset_version=17,
        dynamo=False,
    )
    tmp.rename(files["fp32"])
    quantize_dynamic(str(files["fp32"]), str(files["int8"]), weight_type=QuantType.QInt8)
    return files


class OnnxEncoder:
    """One ONNX Runtime session and the model's tokenizer; `encode(texts)` -> unit rows."""

    def __init__(
        self,
        onnx_file: Path,
        tokenizer,
        max_seq_length: int,
        batch: int = 32,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_file), opts, providers=list(providers))
        self.tokenizer, self.max_seq_length, self.batch = tokenizer, max_seq_length, batch
        self.version = ort.__version__

    def encode(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_seq_length, add_special_tokens=True
        )
        ids = enc["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        rows = np.zeros((len(texts), 0), dtype=np.float32)
        for lo in range(0, len(order), self.batch):
            part = order[lo : lo + self.batch]
            width = max(len(ids[i]) for i in part)
            input_ids = np.zeros((len(part), width), dtype=np.int64)
            mask = np.zeros_like(input_ids)
            for r, i in enumerate(part):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            (hidden,) = self.session.run(
                None,
                {
                    "input_ids": input_ids,
                    "attention_mask": mask,
                    "token_type_ids": np.zeros_like(input_ids),
                },
            )
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if rows.shape[1] == 0:
                rows = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            rows[part] = pooled
        return rows

    def timed(self, texts: list[str]) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        rows = self.encode(texts)
        return time.perf_counter() - t0, rows


def unavailable_on(device: str) -> str:
    """Why ONNX Runtime cannot run on `device` here, or '' when it can."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        # onnxruntime-gpu is a separate package; installing it would be a download at run
        # time, which the GPU machine cannot make, so the contender is skipped there.
        return "no CUDAExecutionProvider: onnxruntime-gpu is not installed on this machine"
    return ""
