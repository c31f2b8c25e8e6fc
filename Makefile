# verse-etl: `make run` sets everything up and builds the sample; `make test` runs the tests.
# Needs only Python 3.11 and make: every other tool is installed into .venv from requirements.lock.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV_VERSION := 0.13.8

export PATH := $(BIN):$(PATH)
# Prefect and DVC: no telemetry, no network. PREFECT_HOME and the Prefect profile are the user's:
# with an API configured the build reports there, else to one local server keeping its runs in
# PREFECT_HOME (.prefect/ here when unset; see flows/server.py).
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: run setup bytecode test durations browser torch lint lock bench clean

run: bytecode ## Build the built-in sample end to end (dvc repro), push it to the local remote, summarise.
	@# The local Prefect server (unless an API is configured) starts while the sample is written.
	python -m verse_etl.flows.server start
	dvc repro
	dvc push --quiet
	verse-etl summary data/build

setup: $(VENV)/.installed ## Create .venv and install the locked dependencies and the project.

# The project's own modules compiled as uv compiles the dependencies (below): with
# PYTHONDONTWRITEBYTECODE set Python never caches them either, and every process (each DVC stage,
# command, test subprocess) compiled verse_etl, its schemas and flows again, ~0.2 s. compileall
# redoes only what changed since; __pycache__ is in .gitignore and .dvcignore (no code dep moves).
bytecode: setup
	@$(BIN)/python -m compileall -q verse_etl schemas flows verse_etl_sample

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on these machines) Python never
	@# caches what it compiles, and every process compiled its imports again: 5-7 s for Prefect
	@# and pandas in each DVC stage, 5 s of the local Prefect server's start.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@# Prefect's migrations run once here, not on the first build's critical path.
	$(BIN)/python -m verse_etl.flows.server prepare
	touch $@

# The suite over every core (pytest-xdist): tests sharing a module-scoped fixture go to one worker
# as a unit, longest first (tests/scheduling.py orders them by tests/durations.json, which
# `make durations` refreshes). PYTEST_WORKERS=0 runs it in this process, one test at a time.
PYTEST_WORKERS ?= auto
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

test: bytecode browser torch ## Lint and run the whole test suite.
	ruff check .
	pytest $(PYTEST_XDIST) --durations=25

durations: bytecode browser torch ## Run the whole suite and record each test's seconds for ordering.
	pytest $(PYTEST_XDIST) --record-durations tests/durations.json

browser: ## Debian's Chromium, for the report's browser test (needs root or sudo-less apt).
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# PyTorch is optional for users (verse_etl.dataset.collate uses it when present); the DataLoader
# test needs it. This machine kind keeps a CPU wheel on disk: installed from there, never from an
# index (which would bring a multi-GB CUDA build); elsewhere the test says it was skipped.
TORCH_WHEEL := $(wildcard /opt/wheels/torch-2.13.0+cpu-cp311-*.whl)
torch: setup
	@if [ -n "$(TORCH_WHEEL)" ]; then $(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps $(TORCH_WHEEL); \
	else echo "no local torch wheel: the DataLoader test will be skipped"; fi

lint: setup
	ruff check .
	ruff format --check .

lock: setup ## Re-resolve requirements.in into requirements.lock (exact pins, Python 3.11).
	$(BIN)/uv pip compile requirements.in --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu --no-header -o requirements.lock

bench: setup ## Conversion benchmark (prints MB/s and peak RSS).
	python benchmarks/convert.py

clean: ## Remove the build, the local Prefect server's database (stopping it first) and caches.
	-[ ! -x $(BIN)/python ] || $(BIN)/python -m verse_etl.flows.server stop
	rm -rf data .prefect .pytest_cache
