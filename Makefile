# bayespk: `make demo` fits the bundled theophylline model; `make test` runs the tests.
# Both create .venv (Python >= 3.12) when it is missing.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x "$(PY)" ]; then \
	  interp=$$(bash .ci/find-python); \
	  echo "creating $(VENV) with $$interp"; \
	  "$$interp" -m venv $(VENV); \
	fi; \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -e ".[test]"; \
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bayespk fit models/theophylline_1cmt_oral.toml --out runs/theophylline --overwrite

# pytest-xdist: one worker per core (at most 4), each test file on one worker (module fixtures built once)
test: $(STAMP)
	$(PY) -m pytest -q --durations=15 -n auto --maxprocesses=4 --dist loadfile

# ruff (pyflakes, pycodestyle, import order, bugbear; rules in pyproject.toml): CI fails on any finding;
# mypy: CI fails on a finding not listed in .ci/mypy-baseline.txt (.ci/typecheck.py --update rewrites it)
lint: $(STAMP)
	$(VENV)/bin/ruff check bayespk tests benchmarks .ci
	$(PY) .ci/typecheck.py

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_fit.py
	$(PY) benchmarks/bench_vpc.py

clean:
	rm -rf $(VENV) runs .pytest_cache
