# The two commands: `make up` (run everything locally) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)

LOCK := requirements.lock

.PHONY: up up-distributed test test-fast test-reliability install lint types check bench clean lock

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade uv

# Reinstall whenever the dependency list or its lock changes. The lock pins every package (Airflow's
# dependencies included) to the versions CI tested; `make lock` refreshes it on purpose.
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	$(VENV)/bin/uv pip install --python $(PY) --quiet -r $(LOCK) -e '.[dev]'
	touch $(STAMP)

lock: | $(PY)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet -o $(LOCK)

install: $(STAMP)

up: install
	$(VENV)/bin/pipeline-service up

# The distributed profile (README, Profiles): Airflow on PostgreSQL with Celery (two workers, Redis broker), the
# DAG files in an S3 DAG bundle (a moto server), task logs in S3, two service replicas on ports 8000 and 8001.
up-distributed: install
	$(VENV)/bin/pipeline-service up-distributed

test: check
	$(PY) tests/preflight.py
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The fault tests on the distributed profile alone (also part of `make test`): ~12 min.
test-reliability: check
	$(PY) tests/preflight.py
	$(VENV)/bin/pytest tests/reliability $(PYTEST_ARGS)

# Everything but the end-to-end tests (no Airflow started): a few minutes.
test-fast: check
	$(PY) tests/preflight.py
	$(VENV)/bin/pytest -m "not e2e" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Lint, types ([tool.mypy]) and the layer contracts ([tool.importlinter] in pyproject.toml): under a minute,
# no database, no Airflow.
check: lint types
	$(VENV)/bin/lint-imports

types: install
	$(VENV)/bin/mypy --strict service connections dag_factory/spec
	$(VENV)/bin/mypy dag_factory

bench: install
	$(PY) bench/publish_and_execute.py

clean:
	rm -rf .data
