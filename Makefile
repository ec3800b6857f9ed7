# The two commands in README.md: `make run` (the main job) and `make test` (the suite).
# Both install what they need into .venv first (pip's cache makes repeat installs quick).

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install run test reliability lint services-up services-down clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/finsentry run

test: install
	$(BIN)/pytest

# Only the tests that record RELIABILITY.md's rows (the file is rewritten, as by `make test`).
reliability: install
	$(BIN)/pytest $$($(BIN)/python -m tests.support.outcomes --selection)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

services-up: install
	$(BIN)/finsentry services up

services-down: install
	$(BIN)/finsentry services down

clean:
	rm -rf $(VENV) .finsentry
