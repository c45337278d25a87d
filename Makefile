# Crosswalk: `make run` starts the engine on its embedded default (SQLite, ./routes);
# `make test` runs the whole test suite. Each creates its own virtual environment in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Test processes (pytest-xdist): most tests wait on sockets and subprocesses, so three share
# two cores well. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 3

.PHONY: run test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Crosswalk needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/crosswalk serve

test: $(VENV)/.installed-test
	$(BIN)/ruff check engine tests bench tools
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=15

lint: $(VENV)/.installed-test
	$(BIN)/ruff check engine tests bench tools
	$(BIN)/ruff format --check engine tests bench tools
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
