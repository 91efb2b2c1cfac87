# Two commands on a fresh machine (Python >= 3.11 and make): `make bench`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup compiler bench experiments browser test lint lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) compiler

compiler:  ## a C compiler for SHARP's fused kernels (without one SHARP runs its slower torch engine)
	command -v cc || command -v gcc || (apt-get update && apt-get install -y gcc) \
		|| echo "no C compiler could be installed: SHARP will run its torch engine"

bench: $(STAMP) compiler  ## the main job: notebooks/05_evaluation.ipynb (segment benchmark, bundled wiki) -> reports/
	$(BIN)/sharp bench --notebook $(BENCH_ARGS)

experiments: $(STAMP) compiler  ## SPEC §8 experiments 2-10 at the quick preset -> reports/experiments/ (not in make test)
	$(BIN)/sharp experiment all --preset quick --out reports/experiments

browser:  ## headless Chromium for the browser test (tests/test_browser.py skips without it)
	command -v chromium || (apt-get update && apt-get install -y chromium) \
		|| echo "chromium could not be installed: the browser test will be skipped"

test: $(STAMP) compiler browser  ## the whole default test suite (slow scale-up tests: PYTEST_ARGS='-m slow')
	$(BIN)/ruff check sharp tests tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lock: $(STAMP)  ## refresh the pinned constraints from the current environment
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^sharp' \
		| sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
