"""Side-by-side throughput: corpusmill's engine against what users would otherwise pick.

One run, the same texts (BEIR SciFact chunked by corpusmill's own chunker), every contender
measured once per round with the order rotated each round, so machine noise shows up as
spread instead of as a verdict. Contenders:

  engine           corpusmill's BatchEngine (dtype auto: bf16 autocast on AMX CPUs)
  engine_fp32      the same engine in float32 (separates the batching win from bf16)
  engine_plain_linear  the same engine with CORPUSMILL_PACK_LINEAR=0 (F.linear instead of
                   oneDNN products on packed weights)
  engine_compiled  the same engine with torch.compile (opt-in; compile time reported apart)
  engine_int8      the same engine with CORPUSMILL_DTYPE=int8 (opt-in; VNNI/AMX CPUs)
  pipeline         `corpusmill ingest` end to end (read, chunk, embed, LanceDB), fresh store,
                   a cold process timed from start to exit (the run's own seconds beside it)
  sentence_transformers  SentenceTransformer.encode() with its defaults (batch 32, fp32)
  sentence_transformers_bf16  the same with the model loaded in bf16: a tuned peer, what a
                   user who knows the CPU has AMX would try first
  onnxruntime_fp32 ONNX Runtime on MiniLM exported locally (torch.onnx.export), fp32
  onnxruntime_int8 the same file after ONNX Runtime's dynamic int8 quantisation
  infinity         an infinity-emb server (own venv, defaults, loopback), 4 concurrent
                   clients posting batches of 32
  chat_shape       a loopback server running one forward per text, one request in flight
  ceiling          the machine's measured bf16 (else float32) matmul peak, a square
                   2048^3 matmul, converted with the model's FLOPs per token -> tokens/s;
                   also the stricter bound of the model's own matmul shapes, which run
                   faster than the square peak on AMX because their weights stay in cache

Each contender's vectors are compared with the float32 engine's (cosine, min and mean);
the fastest engine path at its quality bar is `engine_fastest_path`: every vector at cosine
>= 0.999, or for int8 the cosines at which its SciFact nDCG@10 was measured within 0.005 of
bf16 (bench/summary.py, QUALITY_BAR_BY_PATH).
Prints a table, then one JSON summary as the last line (also written to bench/out/).

    make bench                                  # default, ~12 minutes on 2 CPU cores
    .venv/bin/python -m bench.throughput --quick  # from the repository root
    make bench BENCH_ARGS="--only engine,pipeline --rounds 5"  # cold start: ingest / engine
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench import ceiling, report
from bench.contenders import Bench, load_avg, memory_probe, run_bench_script
from bench.corpus_texts import SCIFACT
from bench.summary import CONTENDERS, DERIVED, LABELS, summarise

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
        "--only",
        default="",
        help="comma-separated contenders to run, every other one left out, and the ceiling, "
        "the memory probe and the at-scale pair too unless named (`ceiling`, `memory`, "
        "`--scale-docs N`); e.g. engine,pipeline",
    )
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
    args.docs = args.docs or (40 if args.quick else 150)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only:
        unknown = only - set(CONTENDERS) - {"ceiling", "memory"}
        if unknown:
            ap.error(
                f"--only: unknown {sorted(unknown)}; choose from {CONTENDERS + ['ceiling', 'memory']}"
            )
        args.skip |= set(CONTENDERS + ["ceiling", "memory"]) - only
        if args.scale_docs < 0:
            args.scale_docs = 0
    if args.scale_docs < 0:
        args.scale_docs = 0 if args.quick else 1000
    return args


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
        for name in order + ([] if "ceiling" in bench.args.skip else ["ceiling"]):
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
                    # The run alone (what this row measured before 2026-12-01), and the run
                    # without its model load: the engine contender starts with the model
                    # loaded, so that one is on the same footing (the load is reported apart).
                    p = bench.extra["pipeline_runs"][-1]
                    run_s = p["run_seconds"] * bench.tokens / max(1, p["tokens"])
                    tps["pipeline_in_run"] = bench.tokens / run_s
                    load = p["model_load_seconds"]
                    tps["pipeline_without_load"] = bench.tokens / max(1e-6, run_s - load)
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


def pipeline_at_scale(docs: int, corpus: str) -> dict:
    """`python -m bench.pipeline_scale` at one larger size, in a child process (cold model load):
    the run's fixed cost (load, Dagster set-up, first table writes) does not grow with the
    corpus, so the small corpus above understates what a real ingest sustains."""
    if docs <= 0:
        return {}
    result = run_bench_script("pipeline_scale", "--sizes", str(docs), "--corpus", corpus)
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
    unavailable = {c: "skipped (--skip / --only)" for c in CONTENDERS if c in args.skip}
    with tempfile.TemporaryDirectory(prefix="corpusmill-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        print(
            f"corpus: {bench.texts.name}: {len(bench.texts.texts)} chunks, {bench.tokens:,} tokens; "
            f"{args.rounds} rounds; load average {load_start}",
            flush=True,
        )
        bench.engine.encode(bench.texts.texts[:8])  # warm-up, as the model resource does
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            for c in ("onnxruntime_fp32", "onnxruntime_int8"):
                if c not in args.skip:
                    unavailable[c] = (
                        "onnxruntime missing: `make bench` installs bench/requirements.txt"
                    )
        from corpusmill.model.hardware import cpu_supports_int8
        from corpusmill.model.int8_linear import supported as int8_ops

        if "engine_int8" not in args.skip and (
            bench.encoder.device != "cpu" or not (cpu_supports_int8() and int8_ops())
        ):
            unavailable["engine_int8"] = "int8 path: needs a CPU with VNNI/AMX and oneDNN int8"
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
    print("\nvector cosine to the float32 engine (min / mean over every chunk):")
    for k, v in summary["cosine_to_fp32"].items():
        print(f"  {k:<36} {v['min']:.6f} / {v['mean']:.6f}")
    print(
        f"fastest engine path at its quality bar: {summary['engine_fastest_path']} "
        f"({summary['engine_fastest_setting']})"
    )
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
