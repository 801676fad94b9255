# The two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test services lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## demo: embedded mode (SQLite, local folder, filesystem broker) on http://127.0.0.1:8000
demo: $(VENV)/.installed
	$(BIN)/synthmed demo

## test: PostgreSQL, Redis, SeaweedFS and Chromium are real; the test run starts what it needs
test: $(VENV)/.installed-test services
	$(BIN)/python -m pytest

services:
	scripts/ensure-services.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

bench: $(VENV)/.installed-test services
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/encoders.py
	$(BIN)/python bench/api.py

clean:
	rm -rf var
