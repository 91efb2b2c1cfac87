# Two commands on a fresh machine (Python >= 3.11 and make): `make bench`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup bench test lint lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

bench: $(STAMP)  ## the main job: segment benchmark on the bundled wiki corpus -> reports/
	$(BIN)/sharp bench $(BENCH_ARGS)

test: $(STAMP)  ## the whole default test suite (slow scale-up tests: PYTEST_ARGS='-m slow')
	$(BIN)/ruff check sharp tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lock: $(STAMP)  ## refresh the pinned constraints from the current environment
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^sharp' \
		| sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
