# kubevine — the two commands a newcomer needs are `make demo` and `make test`.
# Both set up ./.venv from pyproject.toml on first use (and again when it changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all setup demo test check lint typecheck imports format bench clean

all: check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test,hep]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy and import-linter read a copy of the package laid out as installed (hack/pkgview.py):
# the services are mapped into kubevine from top-level folders, which they cannot follow.
typecheck: $(STAMP)
	$(BIN)/python hack/pkgview.py mypy

imports: $(STAMP)
	$(BIN)/python hack/pkgview.py lint-imports

check: lint typecheck imports test

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/commands.py
	$(BIN)/python bench/calls.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .pkgview
