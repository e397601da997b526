# The two commands of the README: `make demo` (set up + main job) and `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m scorealign.cli demo --out $(RUN)

# Two pytest-xdist workers (one per core, fewer on a one-core machine; TEST_WORKERS=0 runs in
# one process), each file on one worker; tests/conftest.py splits the intra-op threads between them.
TEST_WORKERS ?= auto --maxprocesses=2
test: setup
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
