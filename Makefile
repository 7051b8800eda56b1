# Two commands on a fresh machine:  `make run` (the node on embedded defaults)  and  `make test` (every test).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint typecheck pytest install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $@ $(VENV)/.run-installed

install: $(VENV)/.run-installed
install-dev: $(VENV)/.dev-installed

## the node, on embedded defaults (SQLite and spool in ./qc-data, DICOM port 11112, HTTP port 8080)
run: install
	$(BIN)/qc-daemon serve

## every test: lint, types, unit and integration tests with real peers (dcmtk, Orthanc, PostgreSQL, Chromium)
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	QC_TEST_DATABASE_URL="$$(deploy/dev/test-services.sh)" $(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check qc_daemon

typecheck: install-dev
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
