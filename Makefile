# The two commands: `make up` (run everything locally) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: up test install lint bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade uv

# Reinstall whenever the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(VENV)/bin/uv pip install --python $(PY) --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(VENV)/bin/pipeline-service up

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tests/preflight.py
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/publish_and_execute.py

clean:
	rm -rf .data
