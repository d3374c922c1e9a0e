# dialogs: every entry point a user or CI needs. `make run` and `make test` install
# whatever is missing first (Tarantool from apt, the tarantool-test runner, the
# Python packages of the client tests) and are safe to repeat.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
TARANTOOL_TEST_VERSION := 0.7.0

# The release module and the directory init.lua loads it from: one real file,
# replaced atomically on each build (a running server keeps its mapping and can
# reload), and one symlink per procedure name (dialogs_route: the vshard router's
# check of a call, README "Sharding by dialog_id with vshard").
LIB_DIR := target/dialogs
TEST_LIB_DIR := target/dialogs-test
PROCS := new_dialog get_dialog dialogs_route

.PHONY: help deps deps-tarantool deps-runner deps-python build build-test run run-sharded test test-sharded \
        test-unit test-tarantool test-net test-e2e test-lua lint bench bench-smoke deps-postgres clean soak

help:
	@echo "make run    build and start a server on 127.0.0.1:3301 (Ctrl-C stops it)"
	@echo "make run-sharded  two storage replica sets and a router on 127.0.0.1:3301 (needs vshard: VSHARD_DIR=...)"
	@echo "make test   build and run every test"
	@echo "make build  build the release module into $(LIB_DIR)/"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make bench  the full benchmark; make bench-smoke: one second per cell"
	@echo "make soak   1000 connections, 60 s of mixed calls + 15 s read-only (not in make test)"
	@echo "make clean  remove build output (data/ is kept)"

# --- installation of what is missing -------------------------------------------

deps-tarantool:
	@command -v tarantool >/dev/null && [ -f /usr/include/tarantool/module.h ] || { \
	  echo "installing tarantool from apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq tarantool tarantool-dev; }

deps-runner:
	@command -v tarantool-test >/dev/null || { \
	  echo "installing tarantool-test $(TARANTOOL_TEST_VERSION)"; \
	  $(CARGO) install --locked --quiet tarantool-test --version $(TARANTOOL_TEST_VERSION) --features bin; }

deps-python: $(VENV)/.installed

$(VENV)/.installed: tests/python/requirements.txt
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	@touch $@

deps: deps-tarantool deps-runner deps-python

# --- build ------------------------------------------------------------------------

build: deps-tarantool
	$(CARGO) build --release -p dialogs
	@./scripts/install-lib.sh target/release/libdialogs.so $(LIB_DIR) $(PROCS)

# The same module with the in-Tarantool tests and the test-only procedures.
build-test: deps-tarantool
	$(CARGO) build -p dialogs --features test
	@./scripts/install-lib.sh target/debug/libdialogs.so $(TEST_LIB_DIR) $(PROCS) dialogs_test_panic

run: build
	tarantool init.lua

# A local sharded store (scripts/run-sharded): two storage replica sets and a router
# on DIALOGS_LISTEN. Needs vshard: VSHARD_DIR=/path/to/vshard or the Lua path.
run-sharded: build
	VSHARD_DIR="$(VSHARD_DIR)" ./scripts/run-sharded

# --- tests ------------------------------------------------------------------------

test: deps build build-test
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-lua
	$(MAKE) --no-print-directory test-tarantool
	$(MAKE) --no-print-directory test-net
	$(MAKE) --no-print-directory test-e2e
	$(MAKE) --no-print-directory bench-smoke
	@echo "make test: every suite passed (unit and exports, in-Tarantool, Python network, Rust end-to-end, bench smoke)"
	@echo "suites: 5 passed, 0 failed"

# Unit tests, and the release module exports the two procedures and the router's
# check and nothing of the test build (no test entry point, no test-only procedure).
test-unit:
	$(CARGO) test -p dialogs --lib
	@exported=$$(nm -D --defined-only $(LIB_DIR)/libdialogs.so | awk '$$2 == "T" && $$3 !~ /^_ZN/ {print $$3}' | sort | tr '\n' ' '); \
	  if [ "$$exported" != "dialogs_route get_dialog new_dialog " ]; then \
	    echo "release module exports [$$exported], expected [dialogs_route get_dialog new_dialog]"; exit 1; fi; \
	  echo "release module exports exactly: $$exported"

# The plain-Lua unit tests of the Lua modules (tests/lua/): no server needed.
test-lua: deps-tarantool
	tarantool tests/lua/run.lua

test-tarantool:
	tarantool-test -p $(TEST_LIB_DIR)/libdialogs.so -- -i tests/init.lua

test-net: deps-python
	DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) $(VENV)/bin/python -m pytest -q -rsx -p no:cacheprovider tests/python

# The sharded suites alone (README "Sharding"): they need vshard, from VSHARD_DIR or
# the Lua path, and report themselves skipped without it. make test runs them too
# when VSHARD_DIR is set.
test-sharded: build deps-python
	VSHARD_DIR="$(VSHARD_DIR)" DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) $(VENV)/bin/python -m pytest \
	  -q -rsx -p no:cacheprovider tests/python/test_bucket.py tests/python/test_sharded*.py

test-e2e:
	DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) $(CARGO) test -p dialogs-e2e

# --- benchmark (bench/, see README "Benchmarks") ------------------------------------
# Both start their own Tarantool (init.lua + bench/lua/bench.lua) and PostgreSQL on
# 127.0.0.1, on free ports, in temporary directories, and stop them at the end.

deps-postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  echo "installing postgresql from apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; }

# The full matrix: about 6 minutes on 2 cores (118 cells of 2.5 s, data loading,
# the in-process and memory measurements); writes bench/results/latest.{md,json,svg}.
bench: build deps-postgres
	$(CARGO) build --release -p dialogs-bench
	ulimit -n $$(ulimit -Hn); $(CARGO) run --release -q -p dialogs-bench -- \
	  --lib-dir $(LIB_DIR) --out bench/results

# Every target and workload for about a second each; results go to target/bench-smoke.
bench-smoke: build deps-postgres
	$(CARGO) build --release -p dialogs-bench
	ulimit -n $$(ulimit -Hn); $(CARGO) run --release -q -p dialogs-bench -- \
	  --smoke --lib-dir $(LIB_DIR) --out target/bench-smoke

# --- soak (tests/e2e/src/bin/soak.rs; not part of `make test`) ------------------------
# Its own server on 127.0.0.1; 1000 client connections for 60 s of mixed
# new_dialog/get_dialog, then 15 s read-only; fails on any error or on memory that
# grows beyond the stored data. Both ends need a descriptor per connection.
SOAK_ARGS ?=

soak: build
	$(CARGO) build --release -p dialogs-e2e --bin soak
	ulimit -n $$(ulimit -Hn); DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) \
	  $(CARGO) run --release -q -p dialogs-e2e --bin soak -- $(SOAK_ARGS)

# --- failover (docs/replication-section.md) -------------------------------------------
# Makes the instance behind an admin socket the master: make promote ADMIN_SOCKET=path
# (default $DIALOGS_ADMIN_SOCKET). Fence the old master first.
.PHONY: promote
promote:
	./scripts/promote $(ADMIN_SOCKET)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p dialogs --all-targets --features test -- -D warnings

clean:
	$(CARGO) clean
