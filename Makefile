# Two-command start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv test test-fast lint demo clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

# Two workers, one test file each: the files' module fixtures are built once, and
# the workers overlap each other's imports, subprocess starts and data pipelines.
# Files go out in the order tests/conftest.py gives them (those that train first),
# not by their number of tests, so the longest do not finish alone at the end.
TEST_WORKERS ?= 2
PYTEST_XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_XDIST)

test-fast: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_XDIST) -m "not slow"

# Style: pyflakes, pycodestyle and import order, as pyproject.toml configures ruff.
lint: $(TEST_STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(PY) -m utils.demo

clean-demo:
	rm -rf demo_data
