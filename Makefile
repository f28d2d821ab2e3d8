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

.PHONY: install run test lint format bench bench-scale clean browser-deps

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
test: $(STAMP) browser-deps
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

## make bench: the headline comparison (audited reads, oncevault against OpenBao, below:
## 3 alternated rounds, medians), then short runs of the other benchmarks in bench/
## (about 7 minutes; numbers in docs/performance.md). PostgreSQL rows need
## ONCEVAULT_TEST_POSTGRES_DSN, as for make test. Not part of make test.
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python bench/vs_openbao.py $(BENCH_OPENBAO_ARGS)
	$(BIN)/python bench/asgi_servers.py --duration 3 --rounds 1
	$(BIN)/python bench/vault_records.py --duration 5
	$(BIN)/python bench/audit_append.py --duration 3

## make bench-scale: build once (kept in bench/results/, gitignored) a 1,000,000-entry
## audit log in SQLite, then time inclusion and consistency proofs on it; then
## bench/scale.py: bulk issuance through POST /v1/records:batch, read latency as the vault
## grows to 10^3..10^6 citizens (seeding stops at a 25-minute budget), RSS per worker
## (about 45 minutes in all). Not part of make test. Add PostgreSQL to the proofs with
## BENCH_SCALE_ARGS='--postgres DSN'; pass bench/scale.py options with
## BENCH_SCALE_VAULT_ARGS ('--quick' for a run of a few minutes, '--sizes 1000,100000',
## '--write-doc' to rewrite its numbers block in docs/performance.md).
BENCH_SCALE_ARGS ?=
BENCH_SCALE_VAULT_ARGS ?=
bench-scale: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python bench/audit_scale.py $(BENCH_SCALE_ARGS)
	$(BIN)/python bench/scale.py $(BENCH_SCALE_VAULT_ARGS)

## make browser-deps: Debian's Chromium and the Nanum fonts (Korean renders as boxes
## without them) for the browser tests in tests/web; never a downloaded browser.
browser-deps:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium fonts-nanum)
	@fc-list 2>/dev/null | grep -qi nanum || (apt-get update -q && apt-get install -y -q fonts-nanum)
	@chromium --version 2>/dev/null

## make soak: the reliability suite (tests/reliability) with ONCEVAULT_SOAK=1: more clients,
## reads, crash rounds, backend terminations and fuzzing examples (tens of minutes). Add
## PostgreSQL with ONCEVAULT_TEST_POSTGRES_DSN, as for make test.
.PHONY: soak
soak: $(STAMP)
	@start=$$(date +%s); \
	ONCEVAULT_SOAK=1 $(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS); rc=$$?; \
	echo "make soak: wall time $$(( $$(date +%s) - start )) s"; \
	exit $$rc

## make bench-openbao: audited reads, oncevault (serve --workers 2, SQLite, local KEK) against
## OpenBao (bao server -dev, file audit device, KV v2, one scoped token), same wrk load,
## 3 alternated rounds of 20 s each, medians (about 3 minutes). Not part of make test.
## BENCH_OPENBAO_ARGS='--engine postgres' for PostgreSQL (needs ONCEVAULT_TEST_POSTGRES_DSN),
## '--write-doc' to rewrite the numbers block in docs/performance.md.
.PHONY: bench-openbao
BENCH_OPENBAO_ARGS ?=
bench-openbao: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python bench/vs_openbao.py $(BENCH_OPENBAO_ARGS)
