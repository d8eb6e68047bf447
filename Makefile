# recdistill-dagster: two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= demo
RECDISTILL_HOME ?= $(CURDIR)/.state/$(PROFILE)
UI_PORT ?= 3000
MLFLOW_PORT ?= 5000
TORCH_VERSION := 2.13.0
CHROMIUM ?= /usr/bin/chromium
E2E_OUT ?= $(CURDIR)/.state/e2e

export RECDISTILL_PROFILE := $(PROFILE)
export RECDISTILL_HOME
export DAGSTER_HOME ?= $(RECDISTILL_HOME)/dagster
export MPLCONFIGDIR ?= $(CURDIR)/.state/.matplotlib

.PHONY: install install-integrations run test test-bench test-integrations scenarios e2e lint validate ui mlflow-ui \
	movielens movielens-published clean-state bench-eta bench-teacher-curve bench-perf

# Every pip call takes constraints.txt (exact pins of the whole tree, a matched Dagster set): a fresh
# install never resolves, and never picks a library of another Dagster release. The venv's own pip is
# first upgraded to the pinned one, which also applies the pins to build dependencies.
PIP_UPGRADE := $(PY) -m pip install --quiet -c constraints.txt --upgrade pip
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt --build-constraint constraints.txt

# torch first, pinned: it takes the local CPU wheel; the project's range then installs nothing more.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_UPGRADE)
	$(PIP_INSTALL) torch==$(TORCH_VERSION)
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The deployed components' clients (dagster-postgres, psycopg2, s3fs, moto server, onnx, onnxruntime):
# only the targets that use them install them, so `make test` stays lean.
$(VENV)/.integrations: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev,integrations]'
	touch $@

install-integrations: $(VENV)/.integrations

run: install  ## materialize the whole graph for $(PROFILE) in date order and print the summary
	$(PY) -m recdistill_dagster run --profile $(PROFILE)

movielens: install  ## the same graph on MovieLens 100K (3 streaming days), state in .state/movielens
	RECDISTILL_PROFILE=movielens RECDISTILL_HOME=$(CURDIR)/.state/movielens \
		DAGSTER_HOME=$(CURDIR)/.state/movielens/dagster $(PY) -m recdistill_dagster run --profile movielens

# GroupLens' published ML-100K layout (u.data tab-separated; u.item, u.user `|`-separated, latin-1), written from
# the shared parquet copy into a temp folder (the published files are not on this machine, and the data set's
# terms forbid committing either form), read in place by the pipeline, deleted afterwards.
MOVIELENS_PARQUET ?= $(abspath $(CURDIR)/../shared/datasets/movielens-100k)
movielens-published: install  ## `make movielens` on the published ML-100K files (u.data, u.item, u.user)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; folder="$$tmp/ml-100k"; \
	$(PY) -c "import sys; from pathlib import Path; from recdistill_dagster.data.movielens_formats import \
		write_published_ml100k as w; w(Path(sys.argv[1]), Path(sys.argv[2]))" "$(MOVIELENS_PARQUET)" "$$folder"; \
	echo "published ML-100K layout in $$folder:"; ls -l "$$folder"; \
	RECDISTILL_MOVIELENS="$$folder" RECDISTILL_PROFILE=movielens RECDISTILL_HOME=$(CURDIR)/.state/movielens-published \
		DAGSTER_HOME=$(CURDIR)/.state/movielens-published/dagster $(PY) -m recdistill_dagster run --profile movielens

test: install  ## unit + integration tests (tiny profile through Dagster)
	$(PY) -m pytest -q

# PostgreSQL 15 (initdb/pg_ctl as the postgres user), a moto S3 server and an MLflow server on Postgres + S3,
# each started on 127.0.0.1 on a free port by the tests' fixtures and stopped afterwards, also on failure.
# The PostgreSQL server binaries come from the machine image; where they are missing, Debian's package.
test-integrations: install-integrations  ## real components: Postgres-backed Dagster, S3, MLflow server, ONNX, DDP
	@if [ -z "$$RECDISTILL_PG_BIN" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "test-integrations: installing Debian's postgresql (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	$(PY) -m pytest -v -m integrations -p no:cacheprovider

test-bench: install  ## the benchmark harnesses end to end at toy sizes (marker `benchmark`)
	$(PY) -m pytest -q -m benchmark

scenarios: install  ## operational scenarios (kill -9 mid-write, …)
	$(PY) -m pytest -q -m scenario

# Debian's Chromium (apt-get) driven by Playwright from PyPI: no browser download. Screenshots, server
# logs and the session's state folder land in $(E2E_OUT).
e2e: install  ## browser end-to-end tests: dagster dev + mlflow server (tiny profile) in Chromium
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "e2e: installing Debian's chromium (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@$(PY) -c "import playwright" 2>/dev/null || $(PIP_INSTALL) -e '.[dev]'
	RECDISTILL_REQUIRE_E2E=1 RECDISTILL_CHROMIUM=$(CHROMIUM) RECDISTILL_E2E_OUT=$(E2E_OUT) $(PY) -m pytest -q -m e2e
	@echo "e2e: screenshots in $(E2E_OUT)/screenshots, server logs in $(E2E_OUT)/logs"

lint: install  ## ruff, and mypy (strict on models/, the stage and report packages; see pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

validate: install  ## dagster's own check of the code location
	$(PY) -c "from recdistill_dagster.home import ensure_dagster_home, state_home; ensure_dagster_home(state_home())"
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

ui: install  ## the Dagster UI (webserver + daemon) on 127.0.0.1
	$(PY) -c "from recdistill_dagster.home import ensure_dagster_home, state_home; ensure_dagster_home(state_home())"
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p $(UI_PORT) -w workspace.yaml

mlflow-ui: install  ## the MLflow UI over the SQLite tracking store, one worker, on 127.0.0.1
	mkdir -p $(RECDISTILL_HOME)/mlflow
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
		--workers 1 --backend-store-uri sqlite:///$(RECDISTILL_HOME)/mlflow/mlflow.db

# QUICK=1: reduced calendar/volume → bench/results/quick/; ONLY=main,alpha: some experiments; WORLDS=2: at
# most this many independent synthetic worlds per experiment (default: the headline's 5, most others 3);
# SEEDS=1: model seeds per world;
# JOBS=2: cells trained in parallel processes (one torch thread each).
bench-eta: install  ## transferability benchmark through the real asset graph → bench/results/transferability.{md,json}
	$(PY) -m bench $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY)) $(if $(WORLDS),--worlds $(WORLDS)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(JOBS),--jobs $(JOBS))

# What a bigger teacher buys (teachers only, no students): on the benchmark's world at 80,000 impressions a
# day → bench/results/teacher_curve_capacity.{md,json}; COMPLEMENTARITY=0: the earlier world without the
# category x category term, at 80,000 and 240,000 a day → bench/results/teacher_curve.{md,json}.
bench-teacher-curve: install  ## teacher scaling curve: sizes L, M, S, XS (COMPLEMENTARITY=0: the earlier world)
	$(PY) -m bench.teacher_curve $(if $(JOBS),--jobs $(JOBS)) $(if $(COMPLEMENTARITY),--complementarity $(COMPLEMENTARITY),--volumes 80000 --name teacher_curve_capacity)

# The performance benchmark's extra (py-spy for the profiles) and the integrations extra (onnxruntime: the
# serving comparison measures the ONNX exports as well as PyTorch).
$(VENV)/.bench: $(VENV)/.integrations
	$(PIP_INSTALL) -e '.[dev,integrations,bench]'
	touch $@

# QUICK=1: the same cases at reduced sizes (minutes) → bench/results/quick/. Every measuring process is pinned
# with taskset and runs PERF_THREADS torch threads (default 1): figures are per core. With two CPUs or more the
# cases split over two lanes run concurrently, CPU 0 and CPU 1 (PERF_LANES; empty: one lane on PERF_CPUS).
PERF_CPUS ?= 0
PERF_LANES ?= $(if $(filter 0 1,$(shell nproc)),,0$(COMMA)1)
PERF_THREADS ?= 1
COMMA := ,
bench-perf: $(VENV)/.bench  ## performance benchmark → bench/results/performance.{md,json}
	$(PY) -m bench.perf $(if $(QUICK),--quick) $(if $(PERF_LANES),--lanes $(PERF_LANES),--cpus $(PERF_CPUS)) \
		--threads $(PERF_THREADS) $(if $(ONLY),--only $(ONLY))

clean-state:  ## delete the state folder of $(PROFILE)
	rm -rf $(RECDISTILL_HOME)
