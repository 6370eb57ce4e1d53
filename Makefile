# The two setup commands of the README: `make run` (the main job) and
# `make test` (the whole suite, with mypy --strict and ruff). Both create the
# virtualenv and install the package on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/meerkat-runtime demo

lint: $(STAMP)
	$(BIN)/ruff check meerkat_runtime tests benchmarks
	$(BIN)/ruff format --check meerkat_runtime tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
