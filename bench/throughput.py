"""Side-by-side throughput: corpusmill's engine against what users would otherwise pick.

One run, the same texts (BEIR SciFact chunked by corpusmill's own chunker), every contender
measured once per round with the order rotated each round, so machine noise shows up as
spread instead of as a verdict. Contenders:

  engine           corpusmill's BatchEngine (dtype auto: bf16 autocast on AMX CPUs)
  engine_fp32      the same engine in float32 (separates the batching win from bf16)
  engine_plain_linear  the same engine with CORPUSMILL_PACK_LINEAR=0 (F.linear instead of
                   oneDNN products on packed weights)
  engine_compiled  the same engine with torch.compile (opt-in; compile time reported apart)
  pipeline         `corpusmill ingest` end to end (read, chunk, embed, LanceDB), fresh store
  sentence_transformers  SentenceTransformer.encode() with its defaults (batch 32, fp32)
  sentence_transformers_bf16  the same with the model loaded in bf16: a tuned peer, what a
                   user who knows the CPU has AMX would try first
  infinity         an infinity-emb server (own venv, defaults, loopback), 4 concurrent
                   clients posting batches of 32
  chat_shape       a loopback server running one forward per text, one request in flight
  ceiling          the machine's measured bf16 (else float32) matmul peak, a square
                   2048^3 matmul, converted with the model's FLOPs per token -> tokens/s;
                   also the stricter bound of the model's own matmul shapes, which run
                   faster than the square peak on AMX because their weights stay in cache

Prints a table, then one JSON summary as the last line (also written to bench/out/).

    make bench                      # default, ~10 minutes on a 2-core CPU machine
    .venv/bin/python bench/throughput.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import corpusmill.engine  # noqa: F401 (sets the OpenMP wait policy before torch loads)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ceiling  # noqa: E402
import report  # noqa: E402
from contenders import Bench, load_avg, memory_probe, run_bench_script  # noqa: E402
from corpus_texts import SCIFACT  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small corpus, 2 rounds (~3 minutes)")
    ap.add_argument("--docs", type=int, default=0, help="SciFact documents (default 150, quick 40)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds (default 3, quick 2)")
    ap.add_argument("--corpus", default=str(SCIFACT), help="a BEIR corpus.jsonl")
    ap.add_argument("--skip", default="", help="comma-separated contenders to leave out")
    ap.add_argument(
        "--max-batch-tokens", type=int, default=0, help="engine budget (default: the resource's)"
    )
    ap.add_argument(
        "--scale-docs",
        type=int,
        default=-1,
        help="also pair ingest with the engine on this many documents, where a run's fixed "
        "cost is amortised (default 1000, quick 0 = skip)",
    )
    args = ap.parse_args(argv)
    if args.scale_docs < 0:
        args.scale_docs = 0 if args.quick else 1000
    args.docs = args.docs or (40 if args.quick else 150)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


CONTENDERS = [
    "engine",
    "engine_fp32",
    "engine_plain_linear",
    "engine_compiled",
    "pipeline",
    "sentence_transformers",
    "sentence_transformers_bf16",
    "infinity",
    "chat_shape",
]
DERIVED = ["pipeline_without_load", "ceiling", "model_shapes"]
LABELS = {
    "engine": "corpusmill engine",
    "engine_fp32": "corpusmill engine, float32",
    "engine_plain_linear": "corpusmill engine, F.linear",
    "engine_compiled": "corpusmill engine, torch.compile",
    "pipeline": "corpusmill ingest, end to end",
    "sentence_transformers": "sentence-transformers encode()",
    "sentence_transformers_bf16": "sentence-transformers encode(), bf16 weights",
    "infinity": "infinity-emb server",
    "chat_shape": "chat-runtime shape",
    "ceiling": "ceiling: bf16 matmul peak",
    "model_shapes": "bound: matmuls at model shapes",
    "pipeline_without_load": "corpusmill ingest, model load excluded",
}


def run_rounds(
    bench: Bench, contenders: list[str], rounds: int, quick: bool
) -> tuple[list[dict], list[dict]]:
    """Returns (per-round tokens/s by contender, every single measurement with its load)."""
    shape = ceiling.BertShape.from_config(bench.encoder.model.config)
    seq_len = max(1, round(bench.tokens / max(1, len(bench.texts.texts))))
    per_round, log = [], []
    for r in range(rounds):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        tps: dict[str, float] = {}
        for name in order + ["ceiling"]:
            before = load_avg()
            if name == "ceiling":
                c = ceiling.measure(shape, seq_len, bench.engine.max_batch_tokens, quick)
                bench.extra.setdefault("ceiling_runs", []).append(c)
                value = c.get("bfloat16_peak_tokens_per_s") or c["float32_peak_tokens_per_s"]
                tps["model_shapes"] = (
                    c.get("bfloat16_model_shape_tokens_per_s")
                    or c["float32_model_shape_tokens_per_s"]
                )
            else:
                run = getattr(bench, f"{name}_run")
                seconds = run(r) if name == "pipeline" else run()
                value = bench.tokens / seconds
                if name == "pipeline":
                    # The engine contender starts with the model loaded; this is the
                    # pipeline on the same footing (the load is reported on its own).
                    load = bench.extra["pipeline_runs"][-1]["model_load_seconds"]
                    tps["pipeline_without_load"] = bench.tokens / max(1e-6, seconds - load)
            tps[name] = value
            log.append(
                {
                    "round": r + 1,
                    "contender": name,
                    "tokens_per_s": round(value, 1),
                    "load_before": before,
                    "load_after": load_avg(),
                }
            )
            print(
                f"  round {r + 1}: {LABELS[name]:<34} {value:>9,.0f} tokens/s  "
                f"(load {before} -> {load_avg()})",
                flush=True,
            )
        per_round.append(tps)
    return per_round, log


def summarise(
    bench: Bench, per_round, log, unavailable, memory, started: float, load_start: float
) -> dict:
    def med(name):
        return report.spread([r[name] for r in per_round if name in r])

    s = {name: med(name) for name in CONTENDERS + DERIVED}
    last_ceiling = bench.extra.get("ceiling_runs", [{}])[-1]
    summary = {
        "engine_tokens_per_s": s["engine"]["median"],
        "engine_fp32_tokens_per_s": s["engine_fp32"]["median"],
        "engine_plain_linear_tokens_per_s": s["engine_plain_linear"]["median"],
        "engine_compiled_tokens_per_s": s["engine_compiled"]["median"],
        "pipeline_tokens_per_s": s["pipeline"]["median"],
        "pipeline_without_load_tokens_per_s": s["pipeline_without_load"]["median"],
        "sentence_transformers_tokens_per_s": s["sentence_transformers"]["median"],
        "sentence_transformers_bf16_tokens_per_s": s["sentence_transformers_bf16"]["median"],
        "infinity_tokens_per_s": s["infinity"]["median"],
        "chat_shape_tokens_per_s": s["chat_shape"]["median"],
        "pipeline_embed_stage_tokens_per_s": report.spread(
            [p["embed_stage_tokens_per_s"] for p in bench.extra.get("pipeline_runs", [])]
        )["median"],
        "ceiling_tokens_per_s": s["ceiling"]["median"],
        "model_shapes_tokens_per_s": s["model_shapes"]["median"],
        "device": f"cpu: {report.machine()['cpu']}",
        "dtype": bench.encoder.dtype_name,
        "ratios_paired_by_round": {
            "engine_vs_sentence_transformers": report.paired_ratios(
                per_round, "engine", "sentence_transformers"
            ),
            "engine_vs_sentence_transformers_bf16": report.paired_ratios(
                per_round, "engine", "sentence_transformers_bf16"
            ),
            "engine_vs_infinity": report.paired_ratios(per_round, "engine", "infinity"),
            "engine_vs_chat_shape": report.paired_ratios(per_round, "engine", "chat_shape"),
            "engine_fraction_of_ceiling": report.paired_ratios(per_round, "engine", "ceiling"),
            "engine_fraction_of_model_shapes": report.paired_ratios(
                per_round, "engine", "model_shapes"
            ),
            "pipeline_vs_engine": report.paired_ratios(per_round, "pipeline", "engine"),
            "pipeline_without_load_vs_engine": report.paired_ratios(
                per_round, "pipeline_without_load", "engine"
            ),
            "engine_bf16_vs_fp32": report.paired_ratios(per_round, "engine", "engine_fp32"),
            "engine_vs_plain_linear": report.paired_ratios(
                per_round, "engine", "engine_plain_linear"
            ),
            "engine_plain_linear_fraction_of_ceiling": report.paired_ratios(
                per_round, "engine_plain_linear", "ceiling"
            ),
            "engine_compiled_vs_engine": report.paired_ratios(
                per_round, "engine_compiled", "engine"
            ),
            "engine_compiled_fraction_of_ceiling": report.paired_ratios(
                per_round, "engine_compiled", "ceiling"
            ),
        },
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
        "ceiling_detail": last_ceiling,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return summary


def pipeline_at_scale(docs: int, corpus: str) -> dict:
    """`bench/pipeline_scale.py` at one larger size, in a child process (cold model load):
    the run's fixed cost (load, Dagster set-up, first table writes) does not grow with the
    corpus, so the small corpus above understates what a real ingest sustains."""
    if docs <= 0:
        return {}
    result = run_bench_script("pipeline_scale.py", "--sizes", str(docs), "--corpus", corpus)
    if "error" in result:
        return result
    row = result["runs"][0]
    print(
        f"pipeline at scale ({row['docs']} docs, {row['tokens']:,} tokens): ingest / engine "
        f"{row['pipeline_vs_engine']:.2f}, model load excluded "
        f"{row['pipeline_without_load_vs_engine']:.2f}",
        flush=True,
    )
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    started, load_start = time.perf_counter(), load_avg()
    contenders = [c for c in CONTENDERS if c not in args.skip]
    unavailable = {c: "skipped with --skip" for c in CONTENDERS if c in args.skip}
    with tempfile.TemporaryDirectory(prefix="corpusmill-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        print(
            f"corpus: {bench.texts.name}: {len(bench.texts.texts)} chunks, {bench.tokens:,} tokens; "
            f"{args.rounds} rounds; load average {load_start}",
            flush=True,
        )
        bench.engine.encode(bench.texts.texts[:8])  # warm-up, as the model resource does
        try:
            bench.start_servers(contenders, unavailable)
            contenders = [c for c in contenders if c not in unavailable]
            per_round, log = run_rounds(bench, contenders, args.rounds, args.quick)
        finally:
            bench.stop_servers()
        memory = {} if "memory" in args.skip else memory_probe(args)
        at_scale = pipeline_at_scale(args.scale_docs, args.corpus)
        summary = summarise(bench, per_round, log, unavailable, memory, started, load_start)
        summary["pipeline_at_scale"] = at_scale
    rows = [
        (LABELS[n], summary["spread"][n], bench.notes.get(n, unavailable.get(n, "")))
        for n in CONTENDERS + DERIVED
    ]
    print()
    print(report.table(rows))
    print("\nratios (paired within each round, median [min..max]):")
    for k, v in summary["ratios_paired_by_round"].items():
        if v["median"] is not None:
            print(f"  {k:<36} {v['median']:.2f}  [{v['min']:.2f}..{v['max']:.2f}]")
    if memory and "1x" in memory:
        m1, m10 = memory["1x"], memory["10x"]
        print(
            f"\nRSS while streaming: 1x {m1['rss_while_streaming_max_mb']} MB, "
            f"10x {m10['rss_while_streaming_max_mb']} MB ({m1['items']} vs {m10['items']} chunks); "
            f"process peak {m1['peak_rss_mb']} / {m10['peak_rss_mb']} MB (set by model loading)"
        )
    print(f"load average: start {load_start}, end {load_avg()}; {summary['seconds']} s")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(summary, indent=1)
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
