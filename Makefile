# visionkit: `make run` sets up .venv and runs the default pipeline; `make test` runs the tests; `make lint` checks style.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test test-all lint format ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## train, evaluate, export and verify the default model (make run ARGS="task=regression")
	$(BIN)/python -m pipelines.run $(ARGS)

test: $(STAMP)  ## the test suite without `slow` tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)  ## every test, `slow` ones included
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff's checks and formatting, and the one-way import contract, with zero findings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)  ## apply ruff's import order and formatting
	$(BIN)/ruff check --select I --fix .
	$(BIN)/ruff format .

ui: $(STAMP)  ## the MLflow UI on http://127.0.0.1:5000 against the project's store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs multirun
