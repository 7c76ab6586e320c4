# Two entry points for a fresh machine: `make demo` (the bench on the embedded default) and `make test`.
# Each creates the virtual environment when it is missing or older than pyproject.toml or requirements.lock,
# and installs the exact versions of requirements.lock. `make lock` refreshes the lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements.lock
# One pytest-xdist worker per core, a test module's tests on one worker (its module fixtures built once);
# tests/conftest.py gives each worker one torch thread.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadscope

.PHONY: demo test check lint lock clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c $(LOCK) pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/one-shui-bench --config configs/bench/synthetic.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST)

# The fast subset while developing: every module, without the end-to-end runs (marked slow).
check: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The newest versions pyproject.toml allows, installed in a fresh venv and frozen into the lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip && .lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '1,3p' $(LOCK); .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^one[-_]shui'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .lock-venv

clean:
	rm -rf $(VENV) data outputs .pytest_cache
