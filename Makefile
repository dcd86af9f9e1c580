# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each first makes sure .venv exists with the pinned dependencies (constraints.txt) and the
# project installed editable (the venv's own setuptools is pinned too: the wheel test builds
# without build isolation, and Python 3.11's bundled setuptools 65 cannot read pyproject's
# SPDX licence); that step re-runs only when pyproject.toml or constraints.txt change.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser postgres redis stack stack-down stack-status demo test test-fast lint config-docs bench-adbench bench-throughput screenshot clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,stack]"
	@touch $(STAMP)

# The report's browser test needs Debian's chromium, the review page's Selenium test its
# chromium-driver too; each installed once, from the Debian archive.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (for the report's browser test)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
	@command -v chromedriver >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium-driver (for the review page's Selenium test)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-driver; }

# The feedback store's PostgreSQL test starts a private cluster of Debian's postgresql (the
# deployed stack's database); installed once, from the Debian archive, when no server is found.
postgres:
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql (for the feedback store's PostgreSQL test)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }

# The stack's Redis (the Celery broker), from the Debian archive, when no server is found.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing Debian's redis-server (for the multi-machine stack)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

# The multi-machine stack as processes on this host under supervisord (docs/deploy.md):
# PostgreSQL, Redis, the MLflow server, Airflow with SENTINEL_WORKERS Celery workers.
# Without root or sudo the Debian packages are not installed, and `up` says what to install.
CAN_INSTALL := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 && echo yes)
stack: setup $(if $(CAN_INSTALL),postgres redis)
	$(BIN)/python -m pipeline.stack up

stack-down: setup
	$(BIN)/python -m pipeline.stack down

stack-status: setup
	$(BIN)/python -m pipeline.stack status

demo: setup
	$(BIN)/python -m pipeline demo

# The suite runs its files on TEST_WORKERS processes (pytest-xdist, one file per worker at a
# time, so a file's module fixtures such as the stack start once; tests/conftest.py starts the
# longest files first). Much of the system tier waits on servers and child processes, so three
# workers keep 2 cores busy: from a clean clone on session 9's machine the suite took 31 min 8 s
# with them, 49 min 52 s in one process; 13 min 6 s with them on session 15's (docs/testing.md).
# TEST_WORKERS= (empty) runs it in one process.
TEST_WORKERS ?= -n 3 --dist loadfile --no-loadscope-reorder

test: setup browser postgres redis
	$(BIN)/python -m pytest $(TEST_WORKERS) --durations=20

# The unit tier only (tests/unit: no subprocess, no server, tiny data): under 3 minutes.
test-fast: setup
	$(BIN)/python -m pytest tests/unit

# docs/configuration.md and expectations/dataset.schema.json, from pipeline/config/environment.py and
# pipeline/config/dataset_spec.py (tests/unit/test_config_docs.py fails when they are not current).
config-docs: setup
	$(BIN)/python -m pipeline.config.docs

# docs/report.png: the newest report of the demo, as headless Chromium shows it.
screenshot: setup browser
	$(BIN)/python -c "import sys; from pathlib import Path; from pipeline.report.html import screenshot; \
	p = max(Path('var/reports').glob('*/report.html'), key=lambda f: f.stat().st_mtime); \
	screenshot(p, 'docs/report.png', height=2300); print('docs/report.png from', p)"

lint: setup
	$(BIN)/ruff check pipeline models dags benchmarks tests

clean:
	rm -rf var .pytest_cache
