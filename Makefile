# Quick start: `make demo` runs the main job; `make test` runs the test suite. Both create .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test lint format clean

$(BIN)/videothinker: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/videothinker

demo: venv
	$(BIN)/videothinker demo $(ARGS)

test: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/pytest $(ARGS)

lint: venv
	$(BIN)/ruff check src tests

format: venv
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
