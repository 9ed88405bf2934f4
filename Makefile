# Two commands for a newcomer: `make run` and `make test`. Both create .venv from the lock file if missing.
#
# Defaults (students, years, seed, trials, timeouts, paths, URIs) live in ONE place, features/settings.py,
# and every `growth` command reads them; override any of them with an environment variable, e.g.
#   GROWTH_STUDENTS=50000 GROWTH_TRIALS=10 make run          (`growth settings` lists them all)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
GROWTH := $(BIN)/growth
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

# The district every step works on: the default synthetic district's config unless CONFIG is given.
CONFIG ?= $(shell test -x $(GROWTH) && $(GROWTH) settings --get default_config || echo data/district/district.toml)

.PHONY: run test test-fast lint venv bench-venv lock generate validate report tune train predict serve ui \
	bench bench-automl bench-scale bench-serving clean

venv: $(STAMP)

# uv resolves and installs this stack in seconds where plain pip backtracks; it is itself pinned.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Bench-only tools (FLAML, XGBoost, schemathesis), compiled against the main lock so nothing else moves.
bench-venv: $(BENCH_STAMP)
$(BENCH_STAMP): $(STAMP) bench/requirements-bench.lock
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r bench/requirements-bench.lock
	touch $(BENCH_STAMP)

lock:
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile bench/requirements-bench.in -c requirements.lock --python-version 3.11 \
		-o bench/requirements-bench.lock

lint: venv
	$(BIN)/ruff check pipelines features training serving reports tests bench

# CI runs everything; `make test-fast` skips the tests marked slow (the quick loop, under a minute).
test: venv lint
	$(BIN)/pytest -q

test-fast: venv
	$(BIN)/pytest -q -m "not slow"

generate: venv
	$(GROWTH) generate

validate: venv
	$(GROWTH) validate --config $(CONFIG)

tune: venv
	$(GROWTH) tune --config $(CONFIG)

train: venv
	$(GROWTH) train --config $(CONFIG)

# After train, so the growth report carries the champion's model card and what drives growth.
report: venv
	$(GROWTH) report --config $(CONFIG) --mlflow

predict: venv
	$(GROWTH) predict --config $(CONFIG)

# The whole main job on the default synthetic multi-year district:
# generate -> validate -> tune -> train (register, promote, export) -> reports -> batch predictions.
run: generate validate tune train report predict
	@echo
	@echo "data:         $$(dirname $(CONFIG))/ (a 4-year export, its district.toml, truth/)"
	@echo "reports:      out/report/report.html (district) and out/report/growth.html (growth)"
	@echo "evaluation:   out/evaluation/<subject>/ (evaluation.md, support.md, fairness.md)"
	@echo "predictions:  out/predictions.parquet (+ out/predictions_unscored.csv)"
	@echo "MLflow:       make ui  (experiments student-growth-<subject>[-support], student-growth-reports)"
	@echo "Optuna:       optuna.db (studies resume when you run 'make tune' again)"
	@echo "serve:        $(GROWTH) serve"

serve: venv
	$(GROWTH) serve

ui: venv
	$(BIN)/mlflow ui --backend-store-uri "$$($(GROWTH) settings --get tracking_uri)" --port 5000

bench: bench-venv
	$(BIN)/python bench/bench_sgp.py
	$(BIN)/python bench/bench_report.py
	$(BIN)/python bench/bench_batch.py
	$(BIN)/python bench/serving/run.py

bench-automl: bench-venv
	$(BIN)/python bench/bench_automl.py

bench-scale: venv
	$(BIN)/python bench/bench_scale.py

bench-serving: bench-venv
	$(BIN)/python bench/serving/run.py

clean:
	rm -rf out data mlflow.db optuna.db mlruns mlartifacts
