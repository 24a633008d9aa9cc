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
        from corpusmill.engine.runner import BatchEngine
        from corpusmill.model.encoder import TransformerEncoder
        from corpusmill.model.files import default_model_path
        from corpusmill.model.hardware import default_batch_tokens

        self.args, self.work = args, work
        self.model_path = str(default_model_path())
        self.encoder = TransformerEncoder(self.model_path)
        budget = args.max_batch_tokens or default_batch_tokens(self.encoder.device)
        self.engine = BatchEngine(self.encoder, max_batch_tokens=budget)
        name, docs = read_docs(args.docs, Path(args.corpus))
        self.texts = chunk_docs(name, docs, self.encoder.tokenizer, self.encoder.max_seq_length)
        self.tokens = self.texts.total_tokens
        self.corpus_file = work / "corpus.jsonl"
        self.corpus_file.write_text("".join(json.dumps(d) + "\n" for d in docs))
        self.notes: dict[str, str] = {
            "engine": f"{self.encoder.dtype_name}, budget {budget} tokens, "
            f"linear kernel {self.encoder.linear_kernel}"
        }
        self.extra: dict = {}
        # Each contender's vectors from its first run, for the cosine to float32.
        self.vectors: dict = {}
        self._fp32 = None
        self._plain_linear = None
        self._compiled = None
        self._int8 = None
        self._st = None
        self._st_bf16 = None
        self._onnx: dict = {}
        self.servers: dict[str, servers.Server] = {}

    # -- contenders: each returns seconds to embed all texts ---------------------------
    def _keep(self, name: str, rows) -> None:
        self.vectors.setdefault(name, rows)

    def engine_run(self) -> float:
        rows, stats = self.engine.encode(self.texts.texts)
        self._keep("engine", rows)
        self.extra["engine_padding_fraction"] = round(stats.padding_fraction, 4)
        self.extra["engine_batches"] = stats.batches
        return stats.wall_seconds

    def _engine_variant(self, **encoder_options):
        """Another engine on the same model and budget, its encoder built with these options."""
        from corpusmill.engine.runner import BatchEngine
        from corpusmill.model.encoder import TransformerEncoder

        enc = TransformerEncoder(self.model_path, **encoder_options)
        engine = BatchEngine(enc, max_batch_tokens=self.engine.max_batch_tokens)
        engine.encode(self.texts.texts[:8])
        return engine

    def engine_fp32_run(self) -> float:
        if self._fp32 is None:
            self._fp32 = self._engine_variant(dtype="float32")
            self.notes["engine_fp32"] = "float32, same budget"
        rows, stats = self._fp32.encode(self.texts.texts)
        self._keep("engine_fp32", rows)
        return stats.wall_seconds

    def engine_plain_linear_run(self) -> float:
        """The default engine with `pack_linear=False`: Linear layers through `F.linear`, as
        the engine ran before the oneDNN-packed weights (corpusmill/engine/packed_linear.py)."""
        if self._plain_linear is None:
            self._plain_linear = self._engine_variant(pack_linear=False)
            self.notes["engine_plain_linear"] = (
                f"{self._plain_linear.encoder.dtype_name}, F.linear, same budget"
            )
        rows, stats = self._plain_linear.encode(self.texts.texts)
        self._keep("engine_plain_linear", rows)
        return stats.wall_seconds

    def engine_compiled_run(self) -> float:
        """The same engine with `compile=True` (opt-in): corpusmill's `Model`, so its warm-up
        compiles both graphs; that one-off cost is reported, not counted in tokens/s."""
        if self._compiled is None:
            from corpusmill.model import Model, ModelSpec

            spec = ModelSpec(
                path=self.model_path, compile=True, max_batch_tokens=self.engine.max_batch_tokens
            )
            self._compiled = Model(spec).load()
            compile_s = self._compiled.warmup_seconds
            self.extra["engine_compile_seconds"] = compile_s
            self.notes["engine_compiled"] = f"torch.compile, compiled once in {compile_s:.0f} s"
        rows, stats = self._compiled.encode(self.texts.texts)
        self._keep("engine_compiled", rows)
        return stats.wall_seconds

    def engine_int8_run(self) -> float:
        """The engine with `dtype="int8"` (opt-in): int8 Q/K/V, attention output and FFN
        up-projection on oneDNN, the rest bf16 (corpusmill/model/int8_linear.py)."""
        if self._int8 is None:
            self._int8 = self._engine_variant(dtype="int8")
            enc = self._int8.encoder
            self.notes["engine_int8"] = f"int8 ({enc.int8_layers} Linear layers), rest bf16"
        rows, stats = self._int8.encode(self.texts.texts)
        self._keep("engine_int8", rows)
        return stats.wall_seconds

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
            files = onnx_runtime.export(self.encoder.model_dir, self.encoder.card.revision)
            self.extra["onnx_export_seconds"] = round(time.perf_counter() - t0, 1)
            enc = onnx_runtime.OnnxEncoder(
                files[precision], self.encoder.tokenizer, self.encoder.max_seq_length
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
            self._keep(
                "engine_fp32", self._engine_variant(dtype="float32").encode(self.texts.texts)[0]
            )
        return self.vectors["engine_fp32"]

    def chat_shape_run(self) -> float:
        seconds, _ = clients.embed_one_by_one(self.servers["chat_shape"].port, self.texts.texts)
        return seconds

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
            self.notes["chat_shape"] = f"{self.encoder.dtype_name}, 1 text/request, 1 in flight"
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
