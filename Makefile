# The README's commands. Every target creates or reuses .venv and installs from
# pyproject.toml; nothing needs to be installed by hand first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000
DATA_DIR ?= $(if $(ONCEVAULT_DATA_DIR),$(ONCEVAULT_DATA_DIR),.oncevault)
PYTEST_ARGS ?=

.PHONY: install run test lint format bench bench-scale clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "oncevault needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make run: initialise an embedded data dir once, then serve on 127.0.0.1:8000
run: $(STAMP)
	@test -f $(DATA_DIR)/oncevault.sqlite || test -f $(DATA_DIR)/.env || $(BIN)/oncevault init --data-dir $(DATA_DIR)
	@exec $(BIN)/oncevault serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

## make test: the whole suite (SQLite always; PostgreSQL when ONCEVAULT_TEST_POSTGRES_DSN is set)
test: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	echo "make test: wall time $$(( $$(date +%s) - start )) s"; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
