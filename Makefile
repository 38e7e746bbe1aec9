# The two commands: `make demo` and `make test`. Both run `make install` first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test unit clean

install: $(STAMP)

# Postgres server binaries (initdb, pg_ctl, pg_restore) come from Debian when missing.
$(STAMP): pyproject.toml
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
		echo "installing Debian's postgresql (server binaries for the disposable restore target)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: install
	$(BIN)/python -m busflow_verify.demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .dagster_home .demo *.egg-info
