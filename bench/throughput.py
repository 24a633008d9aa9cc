"""Side-by-side throughput: corpusmill's engine against what users would otherwise pick.

One run, the same texts (BEIR SciFact chunked by corpusmill's own chunker). How a
difference is told from noise:
- every contender first makes one untimed-for-the-table pass over the whole corpus: its
  *cold* pass (what a small run sees: first shapes, first allocations), reported apart as
  `cold_tokens_per_s`; the rounds then measure the steady state, every contender warmed the
  same way;
- each round runs every contender once, in an order shuffled per round (seeded, `--seed`;
  the orders are in the JSON), so no contender always follows the same neighbour;
- ratios are paired within a round (both sides under the same load) and reported as median
  [min..max] over the rounds; a difference is real when the range stays on one side of 1.
Contenders:

  engine           corpusmill's engine as `corpusmill ingest` builds it (Settings ->
                   Model): the forward the load-time probe picked, CPU streams
  engine_fp32      the same engine in float32 (separates the batching win from bf16)
  engine_transformers  the default before issue 25: Transformers' forward (bf16 autocast,
                   packed Linear), one batch at a time over both intra-op threads
  engine_compiled  Transformers' forward under torch.compile (opt-in; compile time apart)
  engine_int8      the same engine with CORPUSMILL_DTYPE=int8 (opt-in; VNNI/AMX CPUs)
  pipeline         `corpusmill ingest` end to end (read, chunk, embed, LanceDB), fresh store,
                   a cold process timed from start to exit (the run's own seconds beside it)
  sentence_transformers  SentenceTransformer.encode() with its defaults (batch 32, fp32)
  sentence_transformers_bf16  the same with the model loaded in bf16: a tuned peer, what a
                   user who knows the CPU runs bf16 would try first
  onnxruntime_fp32 ONNX Runtime on MiniLM exported locally (torch.onnx.export), fp32
  onnxruntime_int8 the same file after ONNX Runtime's dynamic int8 quantisation
  infinity         an infinity-emb server (own venv, defaults, loopback), 4 concurrent
                   clients posting batches of 32
  chat_shape       a loopback server running one forward per text, one request in flight
  ceiling          the machine's measured bf16 (else float32) matmul peak, a square
                   2048^3 matmul (the faster of torch.mm and oneDNN's packed product), converted with the model's FLOPs per token -> tokens/s;
                   also the stricter bound of the model's own matmul shapes

Each contender's vectors are compared with the float32 engine's (cosine, min and mean);
the fastest engine path at its quality bar is `engine_fastest_path`: every vector at cosine
>= 0.999, or for int8 the cosines at which its SciFact nDCG@10 was measured within 0.005 of
bf16 (bench/summary.py, QUALITY_BAR_BY_PATH). Beside the rounds, in child processes:
`pipeline_at_scale` (bench/pipeline_scale.py, 1,000 documents) and `host_feed`
(bench/host_feed.py: the embeddings stage fed to a stand-in device, `host_feed_tokens_per_s`).
Prints a table, then one JSON summary as the last line (also written to bench/out/).

    make bench                                  # default, ~20 minutes on 2 CPU cores
    .venv/bin/python -m bench.throughput --quick  # from the repository root
    make bench BENCH_ARGS="--only engine,sentence_transformers_bf16 --rounds 5"
"""

from __future__ import annotations

import argparse
import json
import random
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
    ap.add_argument("--docs", type=int, default=0, help="SciFact documents (default 300, quick 40)")
    ap.add_argument("--seed", type=int, default=25, help="seed of the per-round orders")
    ap.add_argument(
        "--host-feed-docs",
        type=int,
        default=-1,
        help="documents for the stand-in-device host-side benchmark (default 5183, all; "
        "quick 0 = skip)",
    )
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
    args.docs = args.docs or (40 if args.quick else 300)
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
        if args.host_feed_docs < 0:
            args.host_feed_docs = 0
    if args.scale_docs < 0:
        args.scale_docs = 0 if args.quick else 1000
    if args.host_feed_docs < 0:
        args.host_feed_docs = 0 if args.quick else 5183
    return args


def measure(bench: Bench, name: str, round_no: int, shape, seq_len: int, quick: bool) -> dict:
    """One contender, once: {contender: tokens/s} (the ceiling and the pipeline give
    derived figures beside their own)."""
    tps: dict[str, float] = {}
    if name == "ceiling":
        c = ceiling.measure(shape, seq_len, bench.budget, quick)
        bench.extra.setdefault("ceiling_runs", []).append(c)
        tps["ceiling"] = c.get("bfloat16_peak_tokens_per_s") or c["float32_peak_tokens_per_s"]
        tps["model_shapes"] = (
            c.get("bfloat16_model_shape_tokens_per_s") or c["float32_model_shape_tokens_per_s"]
        )
        return tps
    run = getattr(bench, f"{name}_run")
    seconds = run(round_no) if name == "pipeline" else run()
    tps[name] = bench.tokens / seconds
    if name == "pipeline":
        # The run alone, and the run without its model load: the engine contender starts
        # with the model loaded, so that one is on the same footing (the load apart).
        p = bench.extra["pipeline_runs"][-1]
        run_s = p["run_seconds"] * bench.tokens / max(1, p["tokens"])
        tps["pipeline_in_run"] = bench.tokens / run_s
        tps["pipeline_without_load"] = bench.tokens / max(1e-6, run_s - p["model_load_seconds"])
    return tps


def run_rounds(
    bench: Bench, contenders: list[str], rounds: int, quick: bool, seed: int
) -> tuple[list[dict], list[dict], dict, list[list[str]]]:
    """(per-round tokens/s by contender, every measurement with its load, the cold pass,
    each round's order).

    First every contender's cold pass (its first run over the corpus, in a shuffled
    order); then `rounds` rounds, each in an order shuffled anew."""
    shape = ceiling.BertShape.from_config(bench.config)
    seq_len = max(1, round(bench.tokens / max(1, len(bench.texts.texts))))
    rng = random.Random(seed)
    timed = contenders + ([] if "ceiling" in bench.args.skip else ["ceiling"])
    per_round, log, orders = [], [], []
    cold: dict[str, float] = {}
    for r in range(rounds + 1):
        order = rng.sample(timed, len(timed))
        tps: dict[str, float] = {}
        for name in order:
            if r == 0 and name == "ceiling":
                continue  # a microbenchmark with its own warm-up
            before = load_avg()
            got = measure(bench, name, r, shape, seq_len, quick)
            (cold if r == 0 else tps).update(got)
            log.append(
                {
                    "round": r,  # 0: the cold pass
                    "contender": name,
                    "tokens_per_s": round(got[name], 1),
                    "load_before": before,
                    "load_after": load_avg(),
                }
            )
            label = "cold" if r == 0 else f"round {r}"
            print(
                f"  {label:>7}: {LABELS[name]:<40} {got[name]:>9,.0f} tokens/s  "
                f"(load {before} -> {load_avg()})",
                flush=True,
            )
        if r:
            per_round.append(tps)
            orders.append(order)
    return per_round, log, cold, orders


def pipeline_at_scale(docs: int, corpus: str) -> dict:
    """`python -m bench.pipeline_scale` at one larger size, in child processes: first as a
    fresh `corpusmill ingest` process runs it (cold: imports and model load on the clock),
    then three times launched as the daemon launches a sensor's or the UI's run (the warm
    run launcher; the engine timed on both sides of each ingest from the second on), under
    `launched`. The run's fixed cost does not grow with the corpus, so the small corpus
    above understates what a real ingest sustains."""
    if docs <= 0:
        return {}
    result = run_bench_script("pipeline_scale", "--sizes", str(docs), "--corpus", corpus)
    if "error" in result:
        return result
    row = result["runs"][0]
    print(
        f"pipeline at scale ({row['docs']} docs, {row['tokens']:,} tokens), cold process: "
        f"ingest / engine {row['pipeline_vs_engine']:.2f}, model load excluded "
        f"{row['pipeline_without_load_vs_engine']:.2f}",
        flush=True,
    )
    launched = run_bench_script(
        "pipeline_scale", "--sizes", str(docs), "--corpus", corpus, "--launched", "--repeat", "3"
    )
    if "error" in launched:
        row["launched"] = launched
        return row
    ratios = [r["pipeline_vs_engine"] for r in launched["runs"]]
    row["launched"] = {
        "pipeline_vs_engine_median": launched["pipeline_vs_engine_median"],
        "pipeline_vs_engine": ratios,
        "runs": launched["runs"],
        "first_run": launched.get("first_run"),
    }
    print(
        f"pipeline at scale, launched by the warm run launcher: ingest / engine median "
        f"{launched['pipeline_vs_engine_median']:.2f} {ratios}",
        flush=True,
    )
    return row


def host_feed(docs: int, corpus: str) -> dict:
    """`python -m bench.host_feed` in a child process: the real embeddings stage fed to a
    STAND-IN device whose forward returns at once; the host side's tokens/s."""
    if docs <= 0:
        return {}
    result = run_bench_script("host_feed", "--docs", str(docs), "--corpus", corpus)
    if "error" not in result:
        print(
            f"host feed (stand-in device, {docs} docs): "
            f"{result['host_feed_tokens_per_s']:,} tokens/s "
            f"[{result['spread']['min']:,}..{result['spread']['max']:,}]",
            flush=True,
        )
    return result


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
            bench.lineage["device"] != "cpu" or not (cpu_supports_int8() and int8_ops())
        ):
            unavailable["engine_int8"] = "int8 path: needs a CPU with VNNI/AMX and oneDNN int8"
        try:
            bench.start_servers(contenders, unavailable)
            contenders = [c for c in contenders if c not in unavailable]
            per_round, log, cold, orders = run_rounds(
                bench, contenders, args.rounds, args.quick, args.seed
            )
        finally:
            bench.stop_servers()
        memory = {} if "memory" in args.skip else memory_probe(args)
        at_scale = pipeline_at_scale(args.scale_docs, args.corpus)
        feed = host_feed(args.host_feed_docs, args.corpus)
        summary = summarise(bench, per_round, log, unavailable, memory, started, load_start)
        summary["pipeline_at_scale"] = at_scale
        summary["host_feed_tokens_per_s"] = feed.get("host_feed_tokens_per_s")
        summary["host_feed"] = feed
        summary["cold_tokens_per_s"] = {k: round(v, 1) for k, v in cold.items()}
        summary["round_orders"] = orders
        summary["seed"] = args.seed
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
