"""The bench's contenders, their labels, and the JSON summary of one `make bench` run."""

from __future__ import annotations

import time

from bench import report
from bench.contenders import load_avg

CONTENDERS = [
    "engine",
    "engine_fp32",
    "engine_transformers",
    "engine_compiled",
    "engine_int8",
    "pipeline",
    "sentence_transformers",
    "sentence_transformers_bf16",
    "onnxruntime_fp32",
    "onnxruntime_int8",
    "infinity",
    "chat_shape",
]
DERIVED = ["pipeline_in_run", "pipeline_without_load", "ceiling", "model_shapes"]
LABELS = {
    "engine": "corpusmill engine",
    "engine_fp32": "corpusmill engine, float32",
    "engine_transformers": "corpusmill engine before issue 25",
    "engine_compiled": "corpusmill engine, torch.compile",
    "engine_int8": "corpusmill engine, int8 (opt-in)",
    "pipeline": "corpusmill ingest, cold process",
    "sentence_transformers": "sentence-transformers encode()",
    "sentence_transformers_bf16": "sentence-transformers encode(), bf16 weights",
    "onnxruntime_fp32": "ONNX Runtime, fp32",
    "onnxruntime_int8": "ONNX Runtime, int8 (dynamic)",
    "infinity": "infinity-emb server",
    "chat_shape": "chat-runtime shape",
    "ceiling": "ceiling: matmul peak (bf16, else float32)",
    "model_shapes": "bound: matmuls at model shapes",
    "pipeline_in_run": "corpusmill ingest, the run alone",
    "pipeline_without_load": "corpusmill ingest, model load excluded",
}
# The engine's paths a user can pick by a setting, and the bar a path must meet to count
# as "the same quality": every vector at cosine >= 0.999 to the float32 engine.
ENGINE_PATHS = {
    "engine": "default (CORPUSMILL_FORWARD=auto: the probe's forward, CPU streams)",
    "engine_compiled": "CORPUSMILL_COMPILE=1",
    "engine_transformers": "CORPUSMILL_FORWARD=transformers CORPUSMILL_CPU_STREAMS=1",
    "engine_fp32": "CORPUSMILL_DTYPE=float32",
    "engine_int8": "CORPUSMILL_DTYPE=int8",
}
QUALITY_BAR_MIN_COSINE = 0.999
# int8 moves every vector further than bf16 does, so it has a bar of its own, set at what
# was measured where its retrieval quality was checked: worst cosine 0.994-0.995 (100-150
# SciFact docs), mean 0.9975, with SciFact vector nDCG@10 0.6415 against bf16's 0.6435
# through `corpusmill eval` (docs/BENCHMARKS.md). Vectors moved further fail it.
QUALITY_BAR_BY_PATH = {"engine_int8": {"min": 0.99, "mean": 0.997}}
# (num, den) pairs reported as ratios paired within each round.
RATIOS = {
    "engine_vs_sentence_transformers": ("engine", "sentence_transformers"),
    "engine_vs_sentence_transformers_bf16": ("engine", "sentence_transformers_bf16"),
    "engine_vs_onnxruntime_fp32": ("engine", "onnxruntime_fp32"),
    "engine_vs_onnxruntime_int8": ("engine", "onnxruntime_int8"),
    "engine_vs_infinity": ("engine", "infinity"),
    "engine_vs_chat_shape": ("engine", "chat_shape"),
    "engine_fraction_of_ceiling": ("engine", "ceiling"),
    "engine_fraction_of_model_shapes": ("engine", "model_shapes"),
    "pipeline_vs_engine": ("pipeline", "engine"),
    "pipeline_in_run_vs_engine": ("pipeline_in_run", "engine"),
    "pipeline_without_load_vs_engine": ("pipeline_without_load", "engine"),
    "engine_bf16_vs_fp32": ("engine", "engine_fp32"),
    "engine_vs_previous_default": ("engine", "engine_transformers"),
    "engine_transformers_fraction_of_ceiling": ("engine_transformers", "ceiling"),
    "engine_compiled_vs_engine": ("engine_compiled", "engine"),
    "engine_compiled_fraction_of_ceiling": ("engine_compiled", "ceiling"),
    "engine_int8_vs_engine": ("engine_int8", "engine"),
    "engine_int8_vs_onnxruntime_int8": ("engine_int8", "onnxruntime_int8"),
    "onnxruntime_int8_vs_fp32": ("onnxruntime_int8", "onnxruntime_fp32"),
}


def quality(bench) -> dict[str, dict]:
    """Each contender's vector cosine to the float32 engine, over every chunk: min, mean."""
    import numpy as np

    if not bench.vectors:
        return {}
    ref = np.asarray(bench.reference_vectors(), dtype=np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    out = {}
    for name, rows in bench.vectors.items():
        rows = np.asarray(rows, dtype=np.float64)
        cos = (rows * ref).sum(1) / np.linalg.norm(rows, axis=1)
        out[name] = {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}
    return out


def meets_quality_bar(name: str, cosine: dict) -> bool:
    bar = QUALITY_BAR_BY_PATH.get(name, {"min": QUALITY_BAR_MIN_COSINE, "mean": 0.0})
    got = cosine.get(name, {})
    return got.get("min", 0) >= bar["min"] and got.get("mean", 0) >= bar["mean"]


def fastest_engine_path(spread: dict, cosine: dict) -> str | None:
    """The engine path with the highest median tokens/s among those at the quality bar."""
    ok = [
        n for n in ENGINE_PATHS if spread.get(n, {}).get("median") and meets_quality_bar(n, cosine)
    ]
    return max(ok, key=lambda n: spread[n]["median"]) if ok else None


def summarise(
    bench, per_round, log, unavailable, memory, started: float, load_start: float
) -> dict:
    s = {name: report.spread([r[name] for r in per_round if name in r]) for name in LABELS}
    cosine = quality(bench)
    fastest = fastest_engine_path(s, cosine)
    ratios = {k: report.paired_ratios(per_round, a, b) for k, (a, b) in RATIOS.items()}
    if fastest:
        for peer in ("onnxruntime_int8", "onnxruntime_fp32"):
            ratios[f"engine_fastest_vs_{peer}"] = report.paired_ratios(per_round, fastest, peer)
    tps = {f"{n}_tokens_per_s": s[n]["median"] for n in CONTENDERS + DERIVED}
    return {
        **tps,
        "engine_fastest_tokens_per_s": s[fastest]["median"] if fastest else None,
        "engine_fastest_path": fastest,
        "engine_fastest_setting": ENGINE_PATHS.get(fastest or ""),
        "quality_bar": f"every vector at cosine >= {QUALITY_BAR_MIN_COSINE} to float32; "
        + "; ".join(
            f"{n}: worst >= {b['min']}, mean >= {b['mean']} (nDCG@10 checked, BENCHMARKS.md)"
            for n, b in QUALITY_BAR_BY_PATH.items()
        ),
        "cosine_to_fp32": cosine,
        "pipeline_embed_stage_tokens_per_s": report.spread(
            [p["embed_stage_tokens_per_s"] for p in bench.extra.get("pipeline_runs", [])]
        )["median"],
        "device": f"cpu: {report.machine()['cpu']}",
        "dtype": bench.lineage["dtype"],
        "ratios_paired_by_round": ratios,
        "spread": s,
        "unavailable": unavailable,
        "corpus": {
            "name": bench.texts.name,
            "chunks": len(bench.texts.texts),
            "tokens": bench.tokens,
        },
        "memory": memory,
        "machine": report.machine(),
        "load_avg_1m": {"start": load_start, "end": load_avg()},
        "measurements": log,
        "notes": bench.notes,
        **{k: v for k, v in bench.extra.items() if k != "ceiling_runs"},
        "ceiling_detail": bench.extra.get("ceiling_runs", [{}])[-1],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": round(time.perf_counter() - started, 1),
    }
