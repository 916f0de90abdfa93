# The two commands a newcomer needs: `make run` and `make test`.
# Both build .venv from scratch when it is missing, with nothing but Python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Start two demo domains on loopback (embedded SQLite store) and print how to use them.
run: $(STAMP)
	$(BIN)/smdp demo --dir .demo

## Lint, type-check and run the whole test suite.
test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .demo build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
