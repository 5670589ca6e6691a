# Shepherd — two commands on a fresh machine:
#   make run    create the virtualenv, install, start `shepherd serve` on the embedded SQLite store;
#               until a GitHub App is configured it prints a setup link that registers one
#   make test   create the virtualenv, install, lint, type-check and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
# Byte-compile on install and let Python cache our own modules: every CLI start and test
# subprocess imports the same large libraries (anthropic, pydantic) again.
export UV_COMPILE_BYTECODE := 1
unexport PYTHONDONTWRITEBYTECODE
# The PostgreSQL the tests use (trust auth on the development and CI machines).
export SHEPHERD_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test

GIT_START := ^\s*\[?\s*["'"'"'](/usr/bin/)?git["'"'"'],|(exec|run|Popen|call|output|system|spawn)[a-z_]*\(\s*\[?\s*["'"'"'](/usr/bin/)?git\b

.PHONY: run test lint typecheck pytest install system-deps postgres bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv sync --locked --quiet
	@touch $@

system-deps:
	@bash scripts/install-system-deps.sh

postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL is not reachable at 127.0.0.1:5432; the database tests cannot run" >&2; exit 1

run: install system-deps
	$(BIN)/shepherd serve --generate-secret $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	@# Every git process starts in bot/git/runner.py (PR code must not reach git's config-driven
	@# programs); tests/test_git_runner.py checks the same with the AST.
	@! grep -rnE --include='*.py' "$(GIT_START)" bot handlers fixers | grep -v '^bot/git/runner.py:' \
	  || { echo "a git process is started outside bot/git/runner.py" >&2; exit 1; }

typecheck: install
	$(BIN)/mypy bot handlers fixers tests

pytest: install system-deps postgres
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: install system-deps postgres
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/repair.py
	$(BIN)/python bench/distill.py
	$(BIN)/python bench/triage.py
	$(BIN)/python bench/tokens.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/env.py
	$(BIN)/python bench/services.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
