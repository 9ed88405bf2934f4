# Two commands for a newcomer: `make run` and `make test`. Both create .venv from the lock file if missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

STUDENTS ?= 150000
SEED ?= 42
DATA ?= data/district
TRIALS ?= 25
TIMEOUT ?= 150
TUNE_ROWS ?= 40000
WORKERS ?= 1
TARGETS ?= --target math --target reading

.PHONY: run test lint venv lock generate report tune train serve ui bench clean

venv: $(STAMP)

# uv resolves and installs this stack in seconds where plain pip backtracks; it is itself pinned.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

lock:
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.lock

lint: venv
	$(BIN)/ruff check pipelines features training serving reports tests bench

test: venv lint
	$(BIN)/pytest -q

generate: venv
	$(BIN)/growth generate --students $(STUDENTS) --seed $(SEED) --out $(DATA)

report: venv
	$(BIN)/growth report --schools $(DATA)/schools.csv --students $(DATA)/students.csv --out out/report --mlflow

tune: venv
	$(BIN)/growth tune --schools $(DATA)/schools.csv --students $(DATA)/students.csv $(TARGETS) \
		--trials $(TRIALS) --timeout $(TIMEOUT) --tune-rows $(TUNE_ROWS) --workers $(WORKERS)

train: venv
	$(BIN)/growth train --schools $(DATA)/schools.csv --students $(DATA)/students.csv $(TARGETS)

# The whole main job on the default synthetic district: generate -> report -> tune -> train (register + export).
run: generate report tune train
	@echo
	@echo "data:        $(DATA)/ (schools.csv, students.csv, truth files)"
	@echo "report:      out/report/report.html (+ one CSV per table)"
	@echo "evaluation:  out/evaluation/<target>/evaluation.md"
	@echo "MLflow:      mlflow.db  ->  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"
	@echo "Optuna:      optuna.db (studies resume when you run 'make tune' again)"
	@echo "serve:       $(BIN)/growth serve --port 3000"

serve: venv
	$(BIN)/growth serve --port 3000

ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

bench: venv
	$(BIN)/python bench/bench_report.py
	$(BIN)/python bench/serving/run.py

clean:
	rm -rf out data mlflow.db optuna.db mlruns mlartifacts
