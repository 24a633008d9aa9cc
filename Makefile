# corpusmill: every target creates .venv first if it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export CORPUSMILL_DB ?= ./data/lancedb
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

.PHONY: install demo scale-demo test test-all dev eval bench lint format clean

# The grep drops this machine's notes about missing local mirror folders, not pip's errors.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(PY) -m pip install -q -e '.[dev,scale]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $(STAMP)

install: $(STAMP) ## create .venv and install corpusmill with its test tools

demo: $(STAMP) ## materialise the whole graph on the built-in corpus, then search it
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/corpusmill ingest --default --rerank
	$(VENV)/bin/corpusmill search "how do I catch an exception" --k 3

scale-demo: $(STAMP) ## SciFact slice -> 2 Ray workers -> s3:// on moto, in a private network namespace (root)
	$(PY) -m app.netns -- $(PY) -m app.scale_demo --docs $${DOCS:-200} --workers $${WORKERS:-2}

test: $(STAMP) ## the suite CI runs (no GPU, no browser)
	$(PY) -m pytest -q -m "not gpu and not browser"

test-all: $(STAMP) ## everything, GPU and browser tests included where the machine has them
	$(PY) -m pytest -q

dev: $(STAMP) ## Dagster webserver on 127.0.0.1:3000 plus the daemon (sensors, schedules)
	mkdir -p $(DAGSTER_HOME) $${CORPUSMILL_INBOX:-./data/inbox}
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

eval: $(STAMP) ## nDCG@10 / Recall@100 on BEIR SciFact from ../shared/eval/scifact
	$(VENV)/bin/corpusmill eval

bench: $(STAMP) ## side-by-side throughput benchmark (see docs/BENCHMARKS.md)
	$(PY) bench/throughput.py

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf data .pytest_cache
