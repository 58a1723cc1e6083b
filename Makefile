# The README's two commands. Both set everything up from scratch on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make demo`: install the solver (no torch needed) and schedule the quickstart workload.
demo: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/tetriopt solve instances/quickstart.json --policy cpsat --json quickstart-result.json

# `make test`: install everything the tests need (the CPU build of torch for the runtime's
# gloo tests, then the dev, serve and runtime extras) and run the whole suite.
test: $(BIN)/python
	@command -v chromium >/dev/null 2>&1 || $(MAKE) -s chromium
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,runtime]' yunchang==0.6.4
	$(BIN)/pytest -q

# Debian's chromium, for the dashboard's headless-browser test (tests/server/test_dashboard.py);
# where it cannot be installed (no root, no apt) that one test skips.
chromium:
	-(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
		|| echo "chromium not installed: the dashboard browser test will be skipped"
