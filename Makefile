# Two commands do all set-up on a fresh machine:
#   make demo   installs into .venv and runs the pipeline end to end on a generated sample
#   make test   installs into .venv (with test tools) and runs the test suite
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= demo-run
PYTEST_ARGS ?=

.PHONY: install lint browser demo test test-all bench clean

$(VENV)/.installed: setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/crewstream demo --workdir $(WORKDIR)

# The lint (ruff.toml) the tree passes, then the tests.
lint: install
	$(VENV)/bin/ruff check .

# Debian's chromium for the live page's browser test (skipped, saying why, where it cannot be installed).
browser:
	@bash tests/install_browser.sh

# The default suite: everything but the tests marked slow.
test: lint browser
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Everything, slow end-to-end tests included (what CI runs).
test-all: lint browser
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
