# depthflow — the two front-door commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 16

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || PY=python3; \
	 test -x $(BIN)/python || $${PY:-python3} -m venv $(VENV) || { command -v apt-get >/dev/null && apt-get install -y -qq python3-venv && python3 -m venv $(VENV); }
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The collector's per-message modules, compiled with mypyc next to their .py files (about
# 20 s; ~14 % less CPU per depth message, see docs/collector.md); the backtest's level reader
# (its batch mode reads every book level once, through it); the simulator's market and
# publishers (~16 % less of its CPU at the e2e load, where it shares the pipeline's cores);
# the features engine's per-update modules (~30 % less time per book update, docs/features.md).
# Rebuilt whenever one of them changes; a failed compile fails `make install`. Back to pure
# Python: build-native.sh --clean
NATIVE_SRC := $(addprefix services/collector/depthflow/collector/,parsers.py book.py sync.py events.py feed.py) \
	services/backtest/depthflow/backtest/levels.py \
	$(addprefix services/simulator/depthflow/sim/,book.py history.py market.py instruments.py publishers.py) \
	$(addprefix services/features/depthflow/features/,orderbook.py candles.py indicators.py engine.py)
NATIVE := $(addprefix services/,$(addsuffix /build/native-sources.sha256,collector backtest simulator features))

$(NATIVE) &: $(STAMP) $(NATIVE_SRC) deploy/local/build-native.sh
	deploy/local/build-native.sh $(NATIVE_SRC)

install: $(STAMP) $(NATIVE)  ## create .venv, install pinned dependencies, compile the hot paths

lock:  ## re-pin transitive dependencies into constraints.txt
	$(BIN)/pip freeze --exclude-editable | grep -v '^depthflow' > constraints.txt

infra-up:  ## start Kafka (KRaft) and PostgreSQL under .local/ (installs what is missing)
	@deploy/local/infra.sh up

infra-down:  ## stop them
	@deploy/local/infra.sh down

migrate: install infra-up  ## apply every service's migrations
	$(BIN)/depthflow migrate

tools:  ## test tools: promtool (Debian prometheus), kustomize (Go module proxy)
	@deploy/tools.sh

test: install infra-up tools  ## unit + integration tests against real Kafka and PostgreSQL
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: install  ## fast tests only (no broker, no database)
	$(BIN)/python -m pytest -q -m "not integration and not e2e" $(PYTEST_ARGS)

lint: install  ## ruff + mypy
	$(BIN)/ruff check libs services tests bench
	$(BIN)/ruff format --check libs services tests bench
	$(BIN)/mypy libs/common/depthflow $(wildcard services/*/depthflow)

bench: install infra-up  ## throughput and latency, each as a ratio to a ceiling measured in the same run
	$(BIN)/python -m bench.run

run: install infra-up  ## start infra and every service in the foreground (Ctrl-C stops all)
	$(BIN)/depthflow migrate
	$(BIN)/python -m depthflow.common.runner

.PHONY: help install lock tools infra-up infra-down migrate test test-unit lint bench run
