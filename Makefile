# The two setup commands of the README: `make run` (the main job) and
# `make test` (the whole suite, with mypy --strict and ruff). Both create the
# virtualenv and install the package on first use. `make docs` builds the
# documentation into site/ with warnings as errors.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev,docs]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/meerkat-runtime demo

lint: $(STAMP)
	$(BIN)/ruff check meerkat_runtime tests benchmarks scripts
	$(BIN)/ruff format --check meerkat_runtime tests benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

# NO_MKDOCS_2_WARNING silences the theme's banner about MkDocs 2 (not a build warning).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site build *.egg-info .mypy_cache .ruff_cache .pytest_cache
