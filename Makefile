# The two commands: `make demo` and `make test`. Both set up the venv first (idempotent);
# `make test` runs the whole `make install`, which adds Debian's chromium for the browser test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser postgres-newest demo ui lint test unit test-deploy clean-deploy bench bench-curve clean

install: $(STAMP) postgres-newest browser

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

# Production's PostgreSQL (18, with pgcrypto, vector and pg_cron) beside Debian's 15, for dumps
# that pg_restore 15 cannot read (tools/postgres-newest/README.md), and Debian's pg_cron for each
# Debian major. Idempotent: well under a second when done.
PG_NEWEST ?= /opt/busflow-pg/18
postgres-newest: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO env PIP="$(abspath $(BIN))/python -m pip" tools/postgres-newest/install-postgres-newest.sh $(PG_NEWEST); \
	for major in $$(ls /usr/lib/postgresql 2>/dev/null); do \
		[ -e /usr/lib/postgresql/$$major/lib/pg_cron.so ] && continue; \
		echo "installing Debian's postgresql-$$major-cron (pg_cron for PostgreSQL $$major dumps)"; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-$$major-cron >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-$$major-cron >/dev/null; }; \
	done

# The browser test drives Debian's chromium through its chromedriver (Selenium; never a browser
# download). `make install` and `make test` install them when missing; `make demo` and `make ui`
# do not need them.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing Debian's chromium and chromium-driver (for the browser test)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

demo: $(STAMP) postgres-newest
	$(BIN)/python -m busflow_verify.demo

# The Dagster UI on the demo's data (S3 server kept up) until Ctrl-C: http://127.0.0.1:$(UI_PORT)
UI_PORT ?= 3000
ui: $(STAMP) postgres-newest
	$(BIN)/python -m busflow_verify.demo.ui --port $(UI_PORT)

# The tests' disposable clusters, dumps and S3 folders live in tmpfs when there is one: creating
# a cluster's thousand files costs 0.8 s more on this disk, for every one of the suite's runs.
# Two pytest workers: a run waits on pg_restore and Postgres much of the time (76 s -> 43 s for
# test_pipeline.py on 2 cores; three workers were slower).
TEST_TMPDIR ?= $(shell test -w /dev/shm && echo /dev/shm || echo /tmp)
TEST_WORKERS ?= 2

# House rules: ruff's lint and format (pyproject.toml [tool.ruff]; `ruff format .` fixes the
# latter), and the layer rule (pyproject.toml [tool.importlinter]: core/ imports no Dagster, defs/
# no CLI, no circle, core/'s folders in layers).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

test: install lint
	TMPDIR=$(TEST_TMPDIR) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not deploy"

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e and not deploy"

# The deployed topology on a real Docker engine (busflow_verify_tests/deploy/test_deployed_topology.py):
# installs Debian's docker.io, docker-compose and debootstrap when missing, starts an engine of its
# own (state in /var/tmp/busflow-deploy, removed after), builds both images and brings
# docker/compose.yaml up, then runs the scenarios through the webserver's GraphQL. Kept between
# runs in DEPLOY_CACHE: the debootstrap base, the wheelhouse and Docker's layer cache (the engine's
# data root); `make clean-deploy` removes them (the next run is a cold one). Needs root.
DEPLOY_CACHE ?= /var/cache/busflow-deploy
DEPLOY_STATE ?= /var/tmp/busflow-deploy
test-deploy: $(STAMP) postgres-newest
	BUSFLOW_DEPLOY_CACHE=$(DEPLOY_CACHE) BUSFLOW_DEPLOY_STATE=$(DEPLOY_STATE) TMPDIR=$(TEST_TMPDIR) \
		$(BIN)/python -m pytest -q -m deploy busflow_verify_tests/targets/test_docker_target.py \
		busflow_verify_tests/deploy/test_deployed_topology.py

clean-deploy: $(STAMP)
	BUSFLOW_DEPLOY_CACHE=$(DEPLOY_CACHE) BUSFLOW_DEPLOY_STATE=$(DEPLOY_STATE) $(BIN)/python -c \
		'from busflow_verify_tests.deployed.engine import Engine; Engine().stop()'
	rm -rf $(DEPLOY_STATE) $(DEPLOY_CACHE)

# The benchmarks (docs/performance.md); not part of `make test`, which runs their smallest size.
# `make bench`: a naive job, the floor and the project side by side, both shapes (about 17 min).
# `make bench-curve`: the floor and the project up to a 10 GB restored database (busflow shape);
# each dump is built once into BENCH_DUMPS (scale 7200 takes about 25 min and 32 GB of disk while
# it is built) and each size's numbers are kept in docs/cost-curve.json, so
# `make bench-curve CURVE_SCALES=7200` re-measures one size and redraws the whole curve.
BENCH_DUMPS ?= /var/tmp/busflow-bench-dumps
BENCH_WORKDIR ?= /var/tmp
CURVE_SCALES ?= 400 1600 7200
bench: $(STAMP)
	$(BIN)/python bench/verify_bench.py --write-docs

bench-curve: $(STAMP)
	$(BIN)/python bench/cost_curve.py --scales $(CURVE_SCALES) --dumps $(BENCH_DUMPS) \
		--workdir $(BENCH_WORKDIR) --write-docs

clean:
	rm -rf $(VENV) .dagster_home .demo *.egg-info
