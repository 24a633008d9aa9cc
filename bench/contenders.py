"""The contenders, each measured as seconds to embed the same chunk texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.corpus_texts import chunk_docs, read_docs
from bench.peers import clients, servers

REPO = Path(__file__).resolve().parent.parent


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


class Bench:
    def __init__(self, args, work: Path) -> None:
        from corpusmill.config import Settings
        from corpusmill.model import Model
        from corpusmill.model.files import default_model_path

        self.args, self.work = args, work
        self.model_path = str(default_model_path())
        # The engine as `corpusmill ingest` builds it (Settings -> ModelSpec -> Model): its
        # forward chosen by the probe (cached per machine), CPU streams, budget.
        self.spec = Settings.from_env().embedder_spec().with_(path=self.model_path)
        if args.max_batch_tokens:
            self.spec = self.spec.with_(max_batch_tokens=args.max_batch_tokens)
        self.model = Model(self.spec).load()
        self.lineage = self.model.lineage()
        self.budget = int(self.lineage["max_batch_tokens"])
        self.spec = self.spec.with_(max_batch_tokens=self.budget)
        self.tokenizer = self.model.tokens.hf  # Transformers' own, for the peers
        name, docs = read_docs(args.docs, Path(args.corpus))
        self.texts = chunk_docs(name, docs, self.tokenizer, self.model.max_seq_length)
        self.tokens = self.texts.total_tokens
        self.corpus_file = work / "corpus.jsonl"
        self.corpus_file.write_text("".join(json.dumps(d) + "\n" for d in docs))
        self.notes: dict[str, str] = {"engine": _engine_note(self.lineage)}
        self.extra: dict = {"engine_lineage": self.lineage}
        # Each contender's vectors from its first run, for the cosine to float32.
        self.vectors: dict = {}
        self._variants: dict = {}
        self._st = None
        self._st_bf16 = None
        self._onnx: dict = {}
        self.servers: dict[str, servers.Server] = {}

    @property
    def config(self) -> dict:
        return json.loads((Path(self.model_path) / "config.json").read_text())

    # -- contenders: each returns seconds to embed all texts ---------------------------
    def _keep(self, name: str, rows) -> None:
        self.vectors.setdefault(name, rows)

    def engine_run(self) -> float:
        rows, stats = self.model.encode(self.texts.texts)
        self._keep("engine", rows)
        self.extra["engine_padding_fraction"] = round(stats.padding_fraction, 4)
        self.extra["engine_batches"] = stats.batches
        return stats.wall_seconds

    def _variant(self, name: str, **changes) -> float:
        """Another `Model` on the same model and budget, its spec changed by `changes`,
        loaded (and warmed up, as the resource does) on first use; seconds to embed."""
        if name not in self._variants:
            from corpusmill.model import Model

            model = Model(self.spec.with_(**changes)).load()
            self._variants[name] = model
            self.notes[name] = _engine_note(model.lineage())
            self.extra[f"{name}_lineage"] = model.lineage()
        rows, stats = self._variants[name].encode(self.texts.texts)
        self._keep(name, rows)
        return stats.wall_seconds

    def engine_fp32_run(self) -> float:
        return self._variant("engine_fp32", dtype="float32")

    def engine_transformers_run(self) -> float:
        """The default before issue 25: Transformers' forward (bf16 autocast, packed
        Linear layers) on one batch at a time over both intra-op threads."""
        return self._variant("engine_transformers", forward="transformers", cpu_streams=1)

    def engine_compiled_run(self) -> float:
        """torch.compile (opt-in) of Transformers' forward; its one-off compile (in the
        resource's warm-up) is reported, not counted in tokens/s."""
        seconds = self._variant("engine_compiled", compile=True)
        compile_s = self._variants["engine_compiled"].warmup_seconds
        self.extra["engine_compile_seconds"] = round(compile_s, 1)
        self.notes["engine_compiled"] = f"torch.compile, compiled once in {compile_s:.0f} s"
        return seconds

    def engine_int8_run(self) -> float:
        """`dtype="int8"` (opt-in): int8 Q/K/V and FFN up-projection on oneDNN, the rest
        bf16, in Transformers' forward (corpusmill/model/int8_linear.py)."""
        return self._variant("engine_int8", dtype="int8")

    def sentence_transformers_run(self) -> float:
        if self._st is None:
            from sentence_transformers import SentenceTransformer, __version__

            self._st = SentenceTransformer(self.model_path, device="cpu")
            self._st.encode(self.texts.texts[:8])
            self.notes["sentence_transformers"] = (
                f"v{__version__}, encode() defaults (batch 32, fp32)"
            )
        t0 = time.perf_counter()
        rows = self._st.encode(self.texts.texts)
        seconds = time.perf_counter() - t0
        self._keep("sentence_transformers", rows)
        return seconds

    def sentence_transformers_bf16_run(self) -> float:
        if self._st_bf16 is None:
            import torch
            from sentence_transformers import SentenceTransformer

            self._st_bf16 = SentenceTransformer(
                self.model_path, device="cpu", model_kwargs={"dtype": torch.bfloat16}
            )
            self._st_bf16.encode(self.texts.texts[:8])
            self.notes["sentence_transformers_bf16"] = "encode() defaults, weights in bf16"
        t0 = time.perf_counter()
        rows = self._st_bf16.encode(self.texts.texts)
        seconds = time.perf_counter() - t0
        self._keep("sentence_transformers_bf16", rows)
        return seconds

    def _onnxruntime(self, precision: str) -> float:
        if precision not in self._onnx:
            from bench.peers import onnx_runtime

            t0 = time.perf_counter()
            files = onnx_runtime.export(Path(self.model_path), self.model.card.revision)
            self.extra["onnx_export_seconds"] = round(time.perf_counter() - t0, 1)
            enc = onnx_runtime.OnnxEncoder(
                files[precision], self.tokenizer, self.model.max_seq_length
            )
            enc.encode(self.texts.texts[:8])
            self._onnx[precision] = enc
            quant = ", dynamic int8 quantisation" if precision == "int8" else ""
            self.notes[f"onnxruntime_{precision}"] = (
                f"v{enc.version}{quant}, batch 32, {enc.session.get_session_options().intra_op_num_threads} threads"
            )
        seconds, rows = self._onnx[precision].timed(self.texts.texts)
        self._keep(f"onnxruntime_{precision}", rows)
        return seconds

    def onnxruntime_fp32_run(self) -> float:
        return self._onnxruntime("fp32")

    def onnxruntime_int8_run(self) -> float:
        return self._onnxruntime("int8")

    def reference_vectors(self):
        """float32 engine rows: the reference every contender's cosine is taken against."""
        if "engine_fp32" not in self.vectors:
            self.engine_fp32_run()
        return self.vectors["engine_fp32"]

    def chat_shape_run(self) -> float:
        """One text per request, on every 4th text: its rate is set per request, not by the
        corpus, and the whole corpus one by one would take minutes a round."""
        texts = self.texts.texts[::4]
        seconds, _ = clients.embed_one_by_one(self.servers["chat_shape"].port, texts)
        share = sum(self.texts.tokens[::4]) / self.tokens
        return seconds / share

    def infinity_run(self) -> float:
        seconds, _ = clients.infinity_embed(self.servers["infinity"].port, self.texts.texts)
        return seconds

    def pipeline_run(self, round_no: int) -> float:
        """`corpusmill ingest` in a child process on a fresh store; returns the process's
        wall seconds, what `time corpusmill ingest` shows a user: interpreter start, imports,
        Dagster set-up, model load, the run, and the exit. The run's own seconds (from the
        start of the Dagster run to its end) are kept beside it as `run_seconds`."""
        env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME",)}
        env["CORPUSMILL_DB"] = str(self.work / f"pipeline-db-{round_no}")
        argv = [
            str(REPO / ".venv" / "bin" / "corpusmill"),
            "ingest",
            "--json",
            "--label",
            "scifact",
            str(self.corpus_file),
        ]
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=self.work)
        process_seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"corpusmill ingest failed: {done.stderr[-2000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        self.extra.setdefault("pipeline_runs", []).append(
            {
                "tokens": summary["tokens"],
                "chunks": summary["chunks_embedded"],
                "run_seconds": summary["seconds"],
                "model_load_seconds": summary["model_load_seconds"],
                "process_seconds": round(process_seconds, 2),
                "embed_stage_tokens_per_s": summary["tokens_per_s"],
            }
        )
        if summary["tokens"] != self.tokens:
            self.notes["pipeline"] = (
                f"embedded {summary['tokens']} tokens vs {self.tokens} (chunking differs)"
            )
        return process_seconds * self.tokens / max(1, summary["tokens"])

    # -- servers ----------------------------------------------------------------------
    def start_servers(self, contenders: list[str], unavailable: dict[str, str]) -> None:
        if "chat_shape" in contenders:
            s = servers.chat_server(servers.free_port(), self.work / "chat_server.log")
            s.start()
            self.servers["chat_shape"] = s
            self.notes["chat_shape"] = (
                f"{self.lineage['dtype']}, 1 text/request, 1 in flight, every 4th text"
            )
        if "infinity" in contenders:
            why = servers.infinity_unavailable()
            if not why:
                s = servers.infinity_server(
                    servers.free_port(), self.work / "infinity.log", self.model_path
                )
                try:
                    s.start()
                    self.servers["infinity"] = s
                    self.notes["infinity"] = (
                        "v0.0.78 defaults (torch, dtype auto, batch 32), 4 clients x 32"
                    )
                    self.extra["infinity_start_seconds"] = round(s.start_seconds, 1)
                except RuntimeError as exc:
                    why = str(exc)
            if why:
                unavailable["infinity"] = why

    def stop_servers(self) -> None:
        for s in self.servers.values():
            s.stop()


def run_bench_script(module: str, *argv: str) -> dict:
    """Run `python -m bench.<module>` in a child process (a cold interpreter, as a user
    would) and return the JSON object on its last line, or {"error": ...} if it failed."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(args) -> dict:
    """Peak RSS of a streaming engine run at 1x and 10x the corpus (child processes)."""
    docs = max(10, args.docs // 10)
    out = {}
    for repeat in (1, 10):
        result = run_bench_script(
            "memory_probe", "--docs", str(docs), "--repeat", str(repeat), "--corpus", args.corpus
        )
        if "error" in result:
            return result
        out[f"{repeat}x"] = result
    # Resident memory while streaming: the process peak is set earlier, by model loading.
    out["streaming_rss_growth_10x_vs_1x"] = round(
        out["10x"]["rss_while_streaming_max_mb"] / out["1x"]["rss_while_streaming_max_mb"], 3
    )
    return out


def _engine_note(lineage: dict) -> str:
    """What an engine contender ran, from its model's lineage."""
    return (
        f"{lineage['dtype']}, forward {lineage['forward_path']}, "
        f"{lineage['forward_streams']} stream(s) x {lineage['threads_per_stream']} thread(s), "
        f"budget {lineage['max_batch_tokens']}" + (", compiled" if lineage.get("compiled") else "")
    )
