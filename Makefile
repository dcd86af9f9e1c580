# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each first makes sure .venv exists with the pinned dependencies (constraints.txt) and the
# project installed editable; that step re-runs only when pyproject.toml or constraints.txt change.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench-adbench bench-throughput clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: setup
	$(BIN)/python -m pipeline demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check pipeline models dags benchmarks tests

clean:
	rm -rf var .pytest_cache
