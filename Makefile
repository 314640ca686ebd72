# Developer entry points. On a fresh clone `make dev` runs the system and `make test` runs the suite;
# both first create .venv and install the project (scripts/bootstrap.sh, a no-op when up to date).
PYTHON := .venv/bin/python
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: help bootstrap dev run-server run-nodemanager test test-fast lint bench clean

help:
	@echo "make dev              venv + install + apiserver and one nodemanager (Ctrl-C stops both)"
	@echo "make test             the whole test suite (starts SQLite, PostgreSQL, Redis, Docker as it needs)"
	@echo "make test-fast        the suite without tests marked slow"
	@echo "make lint             ruff + mypy --strict"
	@echo "make run-server       apiserver on \$$APISERVER_HOST:\$$APISERVER_PORT (default 127.0.0.1:8080)"
	@echo "make run-nodemanager  nodemanager against \$$API_SERVER_URL (default http://localhost:8080)"
	@echo "make bench            benchmarks, JSON on stdout (see docs/performance.md)"

bootstrap:
	@./scripts/bootstrap.sh

dev:
	./scripts/dev.sh

run-server: bootstrap
	$(PYTHON) -m server

run-nodemanager: bootstrap
	$(PYTHON) -m nodemanager

test: bootstrap
	$(PYTHON) -m pytest $(PYTEST_FLAGS)

test-fast: bootstrap
	$(PYTHON) -m pytest $(PYTEST_FLAGS) -m "not slow"

lint: bootstrap
	$(PYTHON) -m ruff check nodeapi server nodemanager nodectl tests bench
	$(PYTHON) -m mypy

bench: bootstrap
	$(PYTHON) bench/placement.py
	$(PYTHON) bench/cli_startup.py
	$(PYTHON) bench/heartbeat.py
	$(PYTHON) bench/node_listing.py
	$(PYTHON) bench/console_render.py
	$(PYTHON) bench/node_channel.py
	$(PYTHON) -m bench.run_latency
	$(PYTHON) bench/dispatch.py
	$(PYTHON) bench/fleet.py

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
