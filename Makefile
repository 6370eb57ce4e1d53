# The two setup commands of the README: `make run` (the main job) and
# `make test` (the whole suite, with mypy --strict and ruff, the console's browser
# test, and the installed-wheel check). Both create the
# virtualenv and install the package on first use. `make docs` builds the
# documentation into site/ with warnings as errors.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check-wheel docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev,docs]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/meerkat-runtime demo

lint: $(STAMP)
	$(BIN)/ruff check meerkat_runtime tests benchmarks scripts examples
	$(BIN)/ruff format --check meerkat_runtime tests benchmarks scripts examples

typecheck: $(STAMP)
	$(BIN)/mypy

# The dev install holds every extra (postgres, encryption, console, otel), so the
# suite covers them all; check-wheel then installs the built wheel with no extras.
test: $(STAMP) lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) check-wheel

# Build the sdist and the wheel, install the wheel alone in a fresh virtualenv and run
# `meerkat-runtime --version`, the demo and the public-API check from it.
check-wheel: $(STAMP)
	bash scripts/check-wheel.sh $(BIN)/python

# NO_MKDOCS_2_WARNING silences the theme's banner about MkDocs 2 (not a build warning).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site build *.egg-info .mypy_cache .ruff_cache .pytest_cache
