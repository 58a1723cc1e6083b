# The README's two commands. Both set everything up from scratch on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test

$(BIN)/python:
	$(PY) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'

demo: setup
	$(BIN)/tetriopt solve instances/quickstart.json --policy cpsat --json quickstart-result.json

test: setup
	$(BIN)/pytest -q
