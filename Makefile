# Every target depends on the venv, so each works on a fresh clone with nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DIR ?= models.d

.PHONY: install test lint format demo diff sync validate bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# PYTEST_ARGS="-n 2" spreads the suite over two processes (pytest-xdist).
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

validate: $(STAMP)
	$(BIN)/reconciler validate --dir $(DIR)

diff: $(STAMP)
	$(BIN)/reconciler diff --dir $(DIR)

sync: $(STAMP)
	$(BIN)/reconciler sync --dir $(DIR)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --dir $(DIR)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
