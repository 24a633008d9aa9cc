# corpusmill: every target creates .venv first if it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LAUNCHER := $(VENV)/bin/corpusmill
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
DEV_PORT ?= 3000

.PHONY: install demo scale-demo bench-scale test test-fast test-all test-browser dev eval bench bench-serve bench-gpu bench-search bench-inbox bench-ann bench-generations bench-pdf bench-s3 bench-cold bench-drop bench-host-feed bench-profile gpu-pack lint typecheck format clean

# The grep drops this machine's notes about missing local mirror folders, not pip's errors.
# Only the core (`corpusmill`) and the Dagster instance's plug-ins (`dagster_corpusmill`)
# are installed, editable; the `corpusmill` command is a launcher that runs this checkout's
# app/ (`-P`: not whatever `app` the working directory holds), with the checkout on
# PYTHONPATH for that process alone.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(PY) -m pip install -q -e '.[dev,scale]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $(STAMP)

$(LAUNCHER): $(STAMP) Makefile
	printf '%s\n' '#!/bin/sh' \
	  '# corpusmill: the CLI of the checkout $(CURDIR) (written by make install)' \
	  'PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" exec "$(CURDIR)/$(PY)" -P -m app.cli "$$@"' \
	  > $(LAUNCHER)
	chmod +x $(LAUNCHER)

install: $(STAMP) $(LAUNCHER) ## create .venv and install corpusmill with its test tools

demo: $(STAMP) $(LAUNCHER) ## materialise the whole graph on the built-in corpus, then search it
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/corpusmill ingest --default --rerank
	$(VENV)/bin/corpusmill search "how do I catch an exception" --k 3

scale-demo: $(STAMP) ## SciFact slice -> 2 Ray workers -> s3:// on moto, in a private network namespace (root)
	$(PY) -m tools.netns -- $(PY) -m tools.scale_demo --docs $${DOCS:-200} --workers $${WORKERS:-2}

# STAND-IN workers (bench/stand_in.py: the forward sleeps tokens / rate); the rest is real.
SCALE_ARGS ?=
bench-scale: $(STAMP) ## Ray path, N=1..16 stand-in workers: efficiency, host CPU/Mtok, driver RSS 10k..1M chunks, kill/replay (root)
	$(PY) -m tools.netns -- $(PY) -m bench.scale_out $(SCALE_ARGS)

# Two workers, whole files each (see pyproject.toml); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(LAUNCHER) ## the suite CI runs (no GPU, no browser), on TEST_WORKERS processes
	$(PY) -m pytest -q -m "not gpu and not browser" -n $(TEST_WORKERS) --dist loadfile

# The inner loop: pure logic (tests/unit), dagster.materialize runs with tiny models
# (tests/assets) and the two whole-project checks (Definitions snapshot, layers); no real
# MiniLM weights, torch.compile, daemons or CLI processes (those are marked slow or e2e).
# Measured: 54 s wall (48 s in pytest, 30 s user CPU) for 149 tests on the 2-core machine at
# load average 3.5 (other work running); 93-116 s at load 7-11. `time make test-fast`.
test-fast: $(STAMP) ## pure logic and asset tests with tiny models (about three minutes on 2 cores)
	$(PY) -m pytest -q -m "not slow and not gpu and not browser" tests/unit tests/assets tests/test_definitions.py tests/test_layers.py

test-all: $(STAMP) $(LAUNCHER) ## everything, GPU and browser tests included where the machine has them
	$(PY) -m pytest -q

test-browser: $(STAMP) ## the Dagster UI in headless Chromium (needs Debian chromium + chromium-driver); screenshots in artifacts/browser/
	$(PY) -m pytest -q -m browser tests/e2e/test_ui_browser.py

dev: $(STAMP) ## Dagster webserver on 127.0.0.1:3000 plus the daemon (sensors, schedules)
	mkdir -p $(DAGSTER_HOME)
	case "$${CORPUSMILL_INBOX:-./data/inbox}" in s3://*) ;; *) mkdir -p "$${CORPUSMILL_INBOX:-./data/inbox}" ;; esac
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	exec $(PY) -m tools.dev --host 127.0.0.1 --port $(DEV_PORT) --workspace workspace.yaml

eval: $(STAMP) $(LAUNCHER) ## nDCG@10 / Recall@100 on BEIR SciFact from ../shared/eval/scifact
	$(VENV)/bin/corpusmill eval

# Every peer `make bench` compares against is set up here, so one command gives every row:
# ONNX Runtime beside corpusmill in .venv, infinity-emb in a venv of its own (its pins clash).
BENCH_STAMP := $(VENV)/.bench-stamp
INFINITY_STAMP := .venv-infinity/.installed-stamp
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PY) -m pip install -q -r bench/requirements.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $(BENCH_STAMP)

$(INFINITY_STAMP): bench/setup_infinity.sh
	PYTHON=$(PYTHON) bash bench/setup_infinity.sh
	touch $(INFINITY_STAMP)

bench: $(BENCH_STAMP) $(INFINITY_STAMP) ## side-by-side throughput against every peer (docs/BENCHMARKS.md); BENCH_ARGS="--quick"
	$(PY) -m bench.throughput $(BENCH_ARGS)

bench-serve: $(STAMP) $(LAUNCHER) $(INFINITY_STAMP) ## /v1/embeddings against the in-process engine and infinity (docs/BENCHMARKS.md); BENCH_ARGS="--quick"
	$(PY) -m bench.serve_embeddings --out bench/out/serve-embeddings.json $(BENCH_ARGS)

bench-search: $(STAMP) ## search latency per mode on the built-in corpus, after ingesting it twice
	CORPUSMILL_DB=$${BENCH_SEARCH_DB:-./data/bench-search} $(PY) -m bench.search_latency --ingest

bench-ann: $(STAMP) ## flat scan vs IVF-SQ latency and recall at 100k and 1M synthetic rows
	$(PY) -m bench.ann --rows $${ANN_ROWS:-100000,1000000}

bench-inbox: $(STAMP) ## inbox sensor tick over 10,000 files, then 1% incremental re-ingest of SciFact
	$(PY) -m bench.inbox_bench tick --files $${INBOX_FILES:-10000}
	$(PY) -m bench.inbox_bench incremental

bench-generations: $(STAMP) ## a model migration against a fresh ingest; search latency during a build against at rest
	$(PY) -m bench.generations --docs $${GEN_DOCS:-300} --rounds $${GEN_ROUNDS:-3}

bench-pdf: $(STAMP) ## PDF pages/s extracted against tokens/s embedded, side by side; worker cost, peak RSS
	$(PY) -m bench.pdf_extract --pages $${PDF_PAGES:-2000} --rounds $${ROUNDS:-3}

bench-s3: $(STAMP) ## listing and sensor ticks of an s3:// inbox of 10,000 objects on the local S3 server
	$(PY) -m bench.s3_listing --objects $${S3_OBJECTS:-10000} --rounds $${ROUNDS:-3}

bench-cold: $(STAMP) $(LAUNCHER) ## cold `corpusmill search` wall time, CPU and peak RSS: median of 5 fresh processes
	$(PY) -m bench.cold_search --runs $${RUNS:-5} --docs $${COLD_DOCS:-200}

bench-drop: $(STAMP) ## file drop -> searchable p50/p95 with the real daemon (sensor interval 5 s)
	$(PY) -m bench.drop_to_search --drops $${DROPS:-20} --interval $${INTERVAL:-5}

bench-host-feed: $(STAMP) ## the embeddings stage fed to a STAND-IN device (forward returns at once): host_feed_tokens_per_s
	$(PY) -m bench.host_feed --rounds $${ROUNDS:-3}

bench-profile: $(BENCH_STAMP) ## the CPU forwards against the bf16 peer on the same batches, what each factor costs; OPS=1: per-op profile
	$(PY) -m bench.engine_profile --rounds $${ROUNDS:-3} $${OPS:+--ops}

gpu-pack: $(STAMP) ## pack MiniLM (fp16) and a SciFact slice into .gpu/ for a GPU machine
	$(PY) -m bench.gpu_pack

bench-gpu: ## on a CUDA machine: the GPU tests and the GPU benchmark (bench/gpu.sh; no .venv needed)
	bash bench/gpu.sh

lint: $(STAMP) ## ruff: lint and format check over the whole repo
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy over the packages listed in pyproject.toml [tool.mypy]
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf data .pytest_cache
