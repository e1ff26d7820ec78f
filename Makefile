# The two commands: `make run` and `make test`. Everything else helps them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test test-unit test-integration test-e2e install install-test migrate serve services lint format docs bench loadtest clean

run: migrate ## Set up and run the API on the embedded default (SQLite + inline jobs)
	$(BIN)/python manage.py serve

test: install-test services lint ## Set up and run every test (needs PostgreSQL, Redis, RabbitMQ)
	rm -f .coverage .coverage.*
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=80

test-unit: install-test ## Unit tests only: fakes, no services (about 30 s)
	$(BIN)/pytest tests/unit

test-integration: install-test services ## Real PostgreSQL, Redis, RabbitMQ, workers
	$(BIN)/pytest tests/integration

test-e2e: install-test services ## Through a real uvicorn process
	$(BIN)/pytest tests/e2e

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

migrate: install
	$(BIN)/python manage.py migrate

services:
	bash scripts/ensure-services.sh

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: install ## Regenerate docs/configuration.md from the Settings fields
	$(BIN)/python manage.py config-docs

bench: install-test services ## The platform beside raw Celery, raw RQ and a minimal API, one run (~5 min)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python benchmarks/pipeline.py --out benchmarks/results/pipeline.md

loadtest: install-test services ## Locust against 1, 2, 3 API replicas behind HAProxy (~5 min); URL=... LOADTEST_API_KEY=... for one run elsewhere
	$(BIN)/python loadtests/run.py $(if $(URL),--url '$(URL)')

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
