# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format venv bench-poller bench-dispatcher bench-latency clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,embedded,ops]'
	$(BIN)/pip install --quiet --disable-pip-version-check -e clients/python
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/relay demo

# Upstream change -> webhook delay against the simulator's realistic timing, both scenarios
# (a few minutes at the default time scale). Extra flags: make bench-latency ARGS='--tasks 50'
bench-latency: $(STAMP)
	$(BIN)/python bench/latency_bench.py --scenario both $(ARGS)

clean:
	rm -rf $(VENV) .tools .demo .pytest_cache .ruff_cache
