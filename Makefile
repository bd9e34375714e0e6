# The daily verbs. `make demo` and `make test` are the whole set-up on a fresh machine (Python 3.11).
# Service selection is by environment: REDIS_URL (online store), DATABASE_URL (PostgreSQL offline store
# and request log). Unset = embedded SQLite / Parquet / SQLite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export PYTHONUNBUFFERED := 1
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv tools demo test test-fast lint format repro materialize serve curl bench lock clean stream-demo tune-customer-risk status rollback monitor scheduler mlflow-ui

$(VENV)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	@echo ">> creating $(VENV) with pinned dependencies (first run: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

# specs/dvc.yaml (a new spec gets its stages there) and the code deps of dvc.yaml are derived from the specs
# and the imports (pipelines/tabular/dvcgen.py), then DVC runs what is stale in both.
repro: venv
	python -m pipelines.tabular.dvcgen >/dev/null
	dvc repro --all-pipelines  # dvc.yaml and specs/dvc.yaml
	python -m pipelines.lifecycle register  # each trained model into MLflow, gated against its champion

# The model lifecycle (docs/lifecycle.md): the registry's state, a rollback, the monitor, the scheduler.
status: venv
	python -m pipelines.lifecycle status

rollback: venv
	@test -n "$(MODEL)" || { echo "usage: make rollback MODEL=<name>"; exit 2; }
	python -m pipelines.lifecycle rollback $(MODEL)

monitor: venv
	python -m pipelines.lifecycle monitor --retrain

scheduler: venv
	mkdir -p data/dagster
	test -f data/dagster/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > data/dagster/dagster.yaml
	DAGSTER_HOME=$(abspath data/dagster) dagster dev -m pipelines.lifecycle.orchestrator -h $(HOST) -p 3000

mlflow-ui: venv
	mlflow ui --backend-store-uri $$(python -c "from core.settings import Settings; print(Settings().effective_mlflow_uri)") -h $(HOST) -p 5000

# customer_risk's Optuna search (12 trials x 3 folds, ~7 min on 2 cores): writes the chosen hyperparameters
# into params.yaml (customer_risk.train.tuned, that block only), then DVC retrains with them.
# `make repro` / `make demo` never search: they train with the stored values.
tune-customer-risk: venv
	dvc repro customer_risk_training_set
	python -m pipelines.customer_risk.train --tune --training-set data/training/customer_risk.parquet
	dvc repro customer_risk_report

materialize: venv
	python -m pipelines.materialize

curl: venv
	@python -m pipelines.materialize --print-curl --port $(PORT) --api-key "$$(python -m serving.auth demo-key)"

demo: repro materialize
	@echo ""
	@echo "API starting on http://$(HOST):$(PORT) (docs: http://$(HOST):$(PORT)/docs). In another shell"
	@echo "(the demo key: every action but admin, all models, 30 days; python -m serving.auth manages keys):"
	@python -m pipelines.materialize --print-curl --port $(PORT) --api-key "$$(python -m serving.auth demo-key)"
	@echo "Dashboard: http://$(HOST):$(PORT)/dashboard (paste the key above). Metrics: /metrics (same key)."
	@echo ""
	uvicorn serving.app:app --host $(HOST) --port $(PORT) --log-level warning

# The purchase-propensity stream without a broker: recorded page views through the worker on an
# in-process queue (with AMQP_URL set, run `python -m serving.stream` and the producer instead).
stream-demo: repro materialize
	python -m serving.stream --replay data/raw/purchase_propensity/events.jsonl --rate 0 --limit 20000

serve: venv
	uvicorn serving.app:app --host $(HOST) --port $(PORT) --workers 2 --loop uvloop --http httptools

# Benchmarks (not tests): writes bench/results.json and docs/benchmarks.md. Needs Redis + PostgreSQL
# (REDIS_URL / DATABASE_URL, defaulting to this machine's) and wrk (installed from Debian if missing).
bench: repro
	@command -v wrk >/dev/null || { echo ">> installing wrk"; (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null || sudo apt-get install -y wrk; }
	python -m bench.run $(BENCH_ARGS)

# Programs the tests drive besides Python: Prometheus's promtool and server, and Chromium for the browser
# tests (Playwright drives Debian's chromium: browsers cannot be downloaded here). Installed if missing.
tools:
	@missing=""; command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then echo ">> installing$$missing (Debian packages)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$missing >/dev/null; fi; fi

test: venv tools
	pytest

test-fast: venv tools
	pytest -m "not slow and not notebook and not integration"

lint: venv
	ruff check .
	ruff format --check .
	mypy

format: venv
	ruff format .
	ruff check --fix .

# Re-resolve requirements.in and pin the full set as name==version (no URLs).
# Three pinned sets, each resolved in a fresh venv: everything (requirements.txt), then the pipeline image's
# and the serving image's sets constrained to the same versions. SERVING_UNUSED are installed by serving's
# dependencies but never imported by what the image runs (catboost's plotting, SQLAlchemy's mypy plugin):
# tests/unit/test_requirements.py imports every entry point without them.
SERVING_UNUSED := mypy matplotlib fonttools pillow contourpy kiwisolver cycler graphviz
FREEZE := pip freeze | grep -v -e "^-e" -e "@" -e "^\#" | sort -f
lock:
	rm -rf /tmp/featureplat-lock && $(PYTHON) -m venv /tmp/featureplat-lock
	/tmp/featureplat-lock/bin/pip install --quiet -r requirements.in
	/tmp/featureplat-lock/bin/$(FREEZE) > requirements.txt
	for set in pipelines serving; do \
	  rm -rf /tmp/featureplat-lock-$$set && $(PYTHON) -m venv /tmp/featureplat-lock-$$set && \
	  /tmp/featureplat-lock-$$set/bin/pip install --quiet -r requirements/$$set.in -c requirements.txt && \
	  { [ $$set != serving ] || /tmp/featureplat-lock-$$set/bin/pip uninstall --quiet -y $(SERVING_UNUSED); } && \
	  /tmp/featureplat-lock-$$set/bin/$(FREEZE) > requirements/$$set.txt || exit 1; \
	done

clean:
	rm -rf data/feast data/request_log* .pytest_cache
