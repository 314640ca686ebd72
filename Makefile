# Developer entry points. `make dev` gets a fresh machine from nothing to a running system.
PYTHON ?= $(shell [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: help dev run-server run-nodemanager test test-fast lint bench clean

help:
	@echo "make dev              venv + install + apiserver and one nodemanager (Ctrl-C stops both)"
	@echo "make run-server       apiserver on \$$APISERVER_HOST:\$$APISERVER_PORT (default 127.0.0.1:8080)"
	@echo "make run-nodemanager  nodemanager against \$$API_SERVER_URL (default http://localhost:8080)"
	@echo "make test             the whole test suite (real SQLite, PostgreSQL, Redis, Docker)"
	@echo "make test-fast        the suite without tests marked slow"
	@echo "make lint             ruff + mypy --strict"
	@echo "make bench            benchmarks, JSON on stdout (needs wrk and a Docker engine; see docs/performance.md)"

dev:
	./scripts/dev.sh

run-server:
	$(PYTHON) -m server

run-nodemanager:
	$(PYTHON) -m nodemanager

test:
	$(PYTHON) -m pytest $(PYTEST_FLAGS)

test-fast:
	$(PYTHON) -m pytest $(PYTEST_FLAGS) -m "not slow"

lint:
	$(PYTHON) -m ruff check nodeapi server nodemanager nodectl tests
	$(PYTHON) -m mypy

bench:
	$(PYTHON) bench/placement.py
	$(PYTHON) bench/cli_startup.py
	$(PYTHON) bench/heartbeat.py
	$(PYTHON) -m bench.run_latency

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
