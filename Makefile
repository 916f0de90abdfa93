# The two commands a newcomer needs: `make run` and `make test`.
# Both build .venv from scratch when it is missing, with nothing but Python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck clean soak load venv bench mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Start two demo domains on loopback (embedded SQLite store) and print how to use them.
run: $(STAMP)
	$(BIN)/smdp demo --dir .demo

## Lint, check the import layers (pyproject.toml [tool.importlinter]), type-check and run the whole test suite; the integration suite runs
## a second time with every server on PostgreSQL (a throwaway cluster). Both runs measure coverage, server subprocesses included, and
## the target fails below the floors of pyproject.toml [tool.smdp.coverage-floor] (docs/testing.md).
## Two processes run side by side, one per core (a machine has two cores or more; the suite passes pinned
## to one core too), each about as long: the integration suite on SQLite; and the PostgreSQL pass, then
## the unit tests. The second's output is kept in $(VENV)/postgresql-pass.log and printed after the first.
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/coverage erase
	{ pg=0; SMDP_TEST_BACKEND=postgresql $(BIN)/coverage run -m pytest -q -p no:cacheprovider \
		tests/integration || pg=$$?; \
	  unit=0; $(BIN)/coverage run -m pytest -q -p no:cacheprovider tests/unit || unit=$$?; \
	  test $$pg -eq 0 && test $$unit -eq 0; } > $(VENV)/postgresql-pass.log 2>&1 & second=$$!; \
	sqlite=0; $(BIN)/coverage run -m pytest -q tests/integration || sqlite=$$?; \
	other=0; wait $$second || other=$$?; \
	echo "--- the PostgreSQL pass (SMDP_TEST_BACKEND=postgresql pytest tests/integration), then pytest tests/unit ---"; \
	cat $(VENV)/postgresql-pass.log; \
	test $$sqlite -eq 0 && test $$other -eq 0
	$(BIN)/coverage combine -q
	$(BIN)/coverage report
	$(BIN)/coverage json -q -o coverage.json
	$(BIN)/python -m tests.coverage_floor coverage.json

## Crash soak: several hundred messages, servers SIGKILLed at random (not part of make test).
soak: $(STAMP)
	$(BIN)/python -m tests.integration.crashload --messages $${SOAK_MESSAGES:-400}

## Load test: 500 user sessions + 50 peer sessions for 60 s (not part of make test).
load: $(STAMP)
	$(BIN)/python -m bench.load

## Benchmark suite (issue 5): quick size by default, BENCH_SIZE=full for the long one;
## SMDP_CORPUS points at the real-mail corpus (default ../shared/corpus). Results,
## summary.md and plots go to bench/results/ (see docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python -c "import matplotlib, aiosmtpd" 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run

## Mutation testing of the rule modules (issue 17; not part of make test, it is slow):
## cosmic-ray, one resumable session per target in .mutate/. MODULES picks targets
## (e.g. make mutate MODULES="origin quality"); MUTATE_ARGS=--fresh forgets earlier results.
## Figures and every survivor's reason: docs/testing.md, "Mutation testing".
mutate: $(STAMP)
	$(BIN)/python -c "import cosmic_ray" 2>/dev/null || $(BIN)/pip install --quiet -e '.[mutate]'
	$(BIN)/python -m tests.mutation.run $(MUTATE_ARGS) $(MODULES)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .demo .mutate build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache \
		.coverage .coverage.* coverage.json htmlcov
