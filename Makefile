# dialogs: every entry point a user or CI needs. `make run` and `make test` install
# whatever is missing first (Tarantool from apt, the tarantool-test runner, the
# Python packages of the client tests) and are safe to repeat.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
TARANTOOL_TEST_VERSION := 0.7.0
# remark-cli with remark-validate-links checks the Markdown links (make check-refs),
# vfile-reporter-json hands its findings to scripts/check-refs: npm packages at
# exact versions, installed into REMARK_DIR (build output, not committed).
REMARK_PACKAGES := remark-cli@12.0.1 remark-validate-links@13.1.0 vfile-reporter-json@4.0.0
REMARK_DIR := target/remark

# The release module and the directory init.lua loads it from: one real file,
# replaced atomically on each build (a running server keeps its mapping and can
# reload), and one symlink per procedure name (dialogs_route: the vshard router's
# check of a call; dialogs_storage_get, dialogs_storage_new: a storage's read and
# write entries for routers; docs/sharding.md, "How a call travels"; the inbox's
# list_dialogs, mark_read and its internal entries, docs/inbox.md; dialogs_stats,
# dialogs_slow_calls: the counters and the slow-call threshold, docs/metrics.md).
LIB_DIR := target/dialogs
TEST_LIB_DIR := target/dialogs-test
PROCS := new_dialog get_dialog list_dialogs mark_read dialogs_route dialogs_storage_get dialogs_storage_new \
         dialogs_inbox_build dialogs_storage_list dialogs_storage_inbox_apply dialogs_storage_inbox_apply_many \
         dialogs_storage_read_count dialogs_storage_mark_read_apply dialogs_stats dialogs_slow_calls

# The Tarantool every suite runs against: `make test TARANTOOL=/path/to/tarantool`
# (any build, any version), else the `tarantool` first on PATH (Debian's 2.6 from
# apt, which deps-tarantool installs when there is none). Resolved to an absolute
# path and exported, so the harnesses (tests/python, tests/e2e, bench) and
# install-lib.sh start that binary; test recipes also run with a directory first on
# PATH whose `tarantool` is that binary, for what finds it by name (tarantool-test,
# the `#!/usr/bin/env tarantool` scripts).
TARANTOOL_GIVEN := $(filter environment environment\ override command\ line,$(origin TARANTOOL))
TARANTOOL ?= tarantool
override TARANTOOL := $(or $(abspath $(shell command -v '$(TARANTOOL)' 2>/dev/null)),$(TARANTOOL))
export TARANTOOL
TT_PATH_DIR := $(abspath target/tarantool-path/$(subst /,_,$(TARANTOOL)))
WITH_TT := PATH="$(TT_PATH_DIR):$$PATH"
# An older server whose data directory the upgrade test opens with TARANTOOL
# (tests/python/test_upgrade.py; it reports itself skipped when both are one server).
DIALOGS_UPGRADE_FROM ?= $(wildcard /usr/bin/tarantool)
export DIALOGS_UPGRADE_FROM

.PHONY: help deps deps-tarantool deps-runner deps-python deps-luarocks build build-test run run-sharded test test-sharded \
        test-unit test-tarantool test-net test-e2e test-lua lint lint-lua deps-luacheck deps-remark check-refs bench bench-smoke deps-postgres clean soak tarantool-path

help:
	@echo "make run    build and start a server on 127.0.0.1:3301 (Ctrl-C stops it)"
	@echo "make run-sharded  two storage replica sets and a router on 127.0.0.1:3301 (needs vshard: VSHARD_DIR=...)"
	@echo "make test   build and run every test"
	@echo "make build  build the release module into $(LIB_DIR)/"
	@echo "make lint   cargo fmt --check, clippy -D warnings, luacheck (make lint-lua)"
	@echo "make check-refs  every link and file reference in the docs and comments resolves"
	@echo "make bench  the full benchmark; make bench-smoke: one second per cell"
	@echo "make soak   1000 connections, 60 s of mixed calls + 15 s read-only (not in make test)"
	@echo "make backup ADMIN_SOCKET=... DEST=...  a backup of a running instance; make restore-check BACKUP=..., make restore BACKUP=... DIALOGS_DATA_DIR=... (docs/backup.md)"
	@echo "make recount ADMIN_SOCKET=... [REPAIR=1]  check (and fix) the inboxes against the messages (docs/inbox.md)"
	@echo "make clean  remove build output (data/ is kept)"

# --- installation of what is missing -------------------------------------------

# With TARANTOOL given, that server must exist and run; nothing is installed.
deps-tarantool:
ifneq ($(TARANTOOL_GIVEN),)
	@"$(TARANTOOL)" --version >/dev/null 2>&1 || { \
	  echo "TARANTOOL=$(TARANTOOL): not a tarantool that runs"; exit 1; }
else
	@command -v tarantool >/dev/null && [ -f /usr/include/tarantool/module.h ] || { \
	  echo "installing tarantool from apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq tarantool tarantool-dev; }
endif

# The directory of WITH_TT: one per server, so runs against two servers can share a
# checkout.
tarantool-path: deps-tarantool
	@mkdir -p "$(TT_PATH_DIR)" && ln -sfn "$$(command -v "$(TARANTOOL)")" "$(TT_PATH_DIR)/tarantool"

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

# Debian's luarocks: tests/python/test_rock.py installs the rock with it.
deps-luarocks:
	@command -v luarocks >/dev/null || { \
	  echo "installing luarocks from apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq luarocks; }


deps-luacheck:
	@command -v luacheck >/dev/null || { \
	  echo "installing luacheck (lua-check) from apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq lua-check; }

# Debian's nodejs and npm, then the packages, all in one npm install (npm removes
# what a later install does not name). No package.json or lock file is written; the
# stamp holds the package list, so a change of version installs again.
deps-remark:
	@[ "$$(cat $(REMARK_DIR)/.installed 2>/dev/null)" = "$(REMARK_PACKAGES)" ] || { \
	  command -v npm >/dev/null || { \
	    echo "installing nodejs and npm from apt"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; } && \
	  echo "installing $(REMARK_PACKAGES) into $(REMARK_DIR)" && \
	  rm -rf $(REMARK_DIR) && mkdir -p $(REMARK_DIR) && \
	  npm install --prefix $(REMARK_DIR) --no-package-lock --no-save --no-audit --no-fund \
	    --loglevel=error $(REMARK_PACKAGES) && \
	  echo "$(REMARK_PACKAGES)" > $(REMARK_DIR)/.installed; }

deps: deps-tarantool deps-runner deps-python deps-luacheck deps-luarocks deps-remark

# --- build ------------------------------------------------------------------------

build: deps-tarantool
	$(CARGO) build --release -p dialogs
	@./scripts/install-lib.sh target/release/libdialogs.so $(LIB_DIR) $(PROCS)

# The same module with the in-Tarantool tests and the test-only procedures.
build-test: deps-tarantool
	$(CARGO) build -p dialogs --features test
	@./scripts/install-lib.sh target/debug/libdialogs.so $(TEST_LIB_DIR) $(PROCS) dialogs_test_panic

# Tarantool 3 (a `config` module): config/single.yaml with the dialogs role;
# 2.x: init.lua. Probed by scripts/run on the server $(TARANTOOL) names.
run: build
	TARANTOOL="$(TARANTOOL)" ./scripts/run

# A local sharded store (scripts/run-sharded): two storage replica sets and a router
# on DIALOGS_LISTEN. Needs vshard: VSHARD_DIR=/path/to/vshard or the Lua path.
run-sharded: build
	VSHARD_DIR="$(VSHARD_DIR)" ./scripts/run-sharded

# --- tests ------------------------------------------------------------------------

# Every suite runs to its end even after one fails; tests/run-suites.sh then adds up
# the counts the runners printed and ends with one line, `N passed, N failed, N
# skipped` (what CI reads), counting tests only; the checks (lint-lua, check-refs,
# bench-smoke) are reported on a `checks:` line of their own. The exit status says
# whether anything failed, a test or a check.
SUITES := test-unit test-lua lint-lua check-refs test-tarantool test-net test-e2e bench-smoke

test: deps build build-test tarantool-path
	@MAKE="$(MAKE)" ./tests/run-suites.sh $(SUITES)

# Unit tests, and the release module exports exactly the procedures of PROCS and
# nothing of the test build (no test entry point, no test-only procedure).
test-unit:
	$(CARGO) test --no-fail-fast -p dialogs --lib
	@exported=$$(nm -D --defined-only $(LIB_DIR)/libdialogs.so | awk '$$2 == "T" && $$3 !~ /^_ZN/ {print $$3}' | sort | tr '\n' ' '); \
	  expected="$$(echo $(PROCS) | tr ' ' '\n' | sort | tr '\n' ' ')"; \
	  if [ "$$exported" != "$$expected" ]; then \
	    echo "release module exports [$$exported], expected [$$expected]"; exit 1; fi; \
	  echo "release module exports exactly: $$exported"

# The plain-Lua unit tests of the Lua modules (tests/lua/): no server needed.
test-lua: tarantool-path
	$(WITH_TT) "$(TARANTOOL)" tests/lua/run.lua

# tarantool-test starts `tarantool` from PATH.
test-tarantool: tarantool-path
	$(WITH_TT) tarantool-test -p $(TEST_LIB_DIR)/libdialogs.so -- -i tests/init.lua

test-net: deps-python tarantool-path
	$(WITH_TT) DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) $(VENV)/bin/python -m pytest -q -rfEsx -p no:cacheprovider tests/python

# The sharded suites alone (docs/development.md, "Other servers, and the sharded suites"): they need vshard, from VSHARD_DIR or
# the Lua path, and report themselves skipped without it. make test runs them too
# when VSHARD_DIR is set.
test-sharded: build deps-python tarantool-path
	$(WITH_TT) VSHARD_DIR="$(VSHARD_DIR)" DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) \
	  $(VENV)/bin/python -m pytest -q -rsx -p no:cacheprovider \
	  tests/python/test_bucket.py tests/python/test_sharded*.py

test-e2e: tarantool-path
	$(WITH_TT) DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) $(CARGO) test --no-fail-fast -p dialogs-e2e

# --- benchmark (bench/, see docs/benchmarks.md) ------------------------------------
# Both start their own Tarantool (init.lua + bench/lua/bench.lua) and PostgreSQL on
# 127.0.0.1, on free ports, in temporary directories, and stop them at the end.

deps-postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  echo "installing postgresql from apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; }

# The full matrix: about 8 minutes on 2 cores (136 cells of 2.5 s, 172 with vshard, data loading,
# the in-process and memory measurements); writes bench/results/tarantool-<version>.{md,json,svg}
# for the server it ran against (`make bench TARANTOOL=/path/to/tarantool`).
bench: build deps-postgres
	$(CARGO) build --release -p dialogs-bench
	ulimit -n $$(ulimit -Hn); $(CARGO) run --release -q -p dialogs-bench -- \
	  --lib-dir $(LIB_DIR) --out bench/results

# Every target and workload for about a second each; results go to target/bench-smoke.
bench-smoke: build deps-postgres tarantool-path
	$(CARGO) build --release -p dialogs-bench
	ulimit -n $$(ulimit -Hn); $(WITH_TT) $(CARGO) run --release -q -p dialogs-bench -- \
	  --smoke --lib-dir $(LIB_DIR) --out target/bench-smoke

# docs/sharding.md, "Sizing": the sizing table of a sharded store from the measured figures
# (the newest bench/results/sharded/tarantool-*.json, bench/results/rebalance.json).
.PHONY: sizing
sizing:
	$(PYTHON) bench/sizing.py

# --- soak (tests/e2e/src/bin/soak.rs; not part of `make test`) ------------------------
# Its own server on 127.0.0.1; 1000 client connections for 60 s of mixed
# new_dialog/get_dialog, then 15 s read-only; fails on any error or on memory that
# grows beyond the stored data. Both ends need a descriptor per connection.
SOAK_ARGS ?=

soak: build
	$(CARGO) build --release -p dialogs-e2e --bin soak
	ulimit -n $$(ulimit -Hn); DIALOGS_LIB_DIR=$(abspath $(LIB_DIR)) \
	  $(CARGO) run --release -q -p dialogs-e2e --bin soak -- $(SOAK_ARGS)

# --- failover (docs/operations.md, "Failover: an operator's act") -------------------------------------------
# Makes the instance behind an admin socket the master: make promote ADMIN_SOCKET=path
# (default $DIALOGS_ADMIN_SOCKET). Fence the old master first.
.PHONY: promote
promote:
	./scripts/promote $(ADMIN_SOCKET)

# Every Lua file of the repository: the *.lua files git knows of (tracked, or new
# and not ignored) and the scripts that run under tarantool (scripts/promote).
# Settings in .luacheckrc.
LUA_FILES = $(shell git ls-files --cached --others --exclude-standard '*.lua') \
            $(shell grep -l '^\#!.*tarantool' scripts/* 2>/dev/null)

lint-lua: deps-luacheck
	luacheck --no-color --formatter plain $(sort $(LUA_FILES))
	@echo "luacheck: $(words $(sort $(LUA_FILES))) Lua files clean"

# Every link in the Markdown files (remark-validate-links, offline) and every file,
# section and test a comment, message or doc names (scripts/check-refs) resolves.
check-refs: deps-remark
	$(PYTHON) scripts/check-refs

# May a stopped old master rejoin as it is? make rejoin-check DATA_DIR=its/data
# ADMIN_SOCKET=new-master.sock; exit 3 if it diverged (docs/operations.md, "Rejoining an old master":
# scripts/rejoin export, then replay).
.PHONY: rejoin-check
rejoin-check:
	./scripts/rejoin check $(DATA_DIR) --master-socket $(ADMIN_SOCKET)

# The recount of a running store's inboxes (docs/inbox.md, "Recount"): make recount
# ADMIN_SOCKET=path checks every inbox entry and total against the messages (exit 3
# when one differs); with REPAIR=1 it fixes them (the writable instance's socket).
.PHONY: recount
recount:
	"$(TARANTOOL)" scripts/recount "$(ADMIN_SOCKET)" $(if $(REPAIR),--repair)

# Backup and restore (docs/backup.md): make backup ADMIN_SOCKET=path DEST=dir takes a
# consistent copy of the running instance behind the admin socket; make restore-check
# BACKUP=dir verifies one against its manifest; make restore BACKUP=dir
# DIALOGS_DATA_DIR=dir checks it, copies it into that empty directory and starts a
# server on it, as make run does.
.PHONY: backup restore-check restore
backup:
	"$(TARANTOOL)" scripts/backup take "$(ADMIN_SOCKET)" "$(DEST)"

restore-check:
	"$(TARANTOOL)" scripts/backup check "$(BACKUP)"

restore: build
	"$(TARANTOOL)" scripts/backup restore "$(BACKUP)" "$(DIALOGS_DATA_DIR)"
	DIALOGS_DATA_DIR="$(DIALOGS_DATA_DIR)" TARANTOOL="$(TARANTOOL)" ./scripts/run

# The sharded store of make run-sharded as one cut (docs/backup.md, "A sharded
# store"): make backup-cluster DEST=dir [SHARDED_DATA_DIR=data/sharded] backs up both
# masters with the rebalancer stopped; make restore-cluster BACKUP=dir
# DIALOGS_DATA_DIR=dir restores them into that empty directory and runs
# make run-sharded on it.
SHARDED_DATA_DIR ?= data/sharded
.PHONY: backup-cluster restore-cluster
backup-cluster:
	"$(TARANTOOL)" scripts/backup take-cluster "$(DEST)" \
	  s1="$(SHARDED_DATA_DIR)/s1-master/tarantool.control" \
	  s2="$(SHARDED_DATA_DIR)/s2-master/tarantool.control"

restore-cluster: build
	"$(TARANTOOL)" scripts/backup restore-cluster "$(BACKUP)" "$(DIALOGS_DATA_DIR)"
	DIALOGS_DATA_DIR="$(DIALOGS_DATA_DIR)" VSHARD_DIR="$(VSHARD_DIR)" TARANTOOL="$(TARANTOOL)" \
	  ./scripts/run-sharded

lint: lint-lua
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p dialogs --all-targets --features test -- -D warnings

clean:
	$(CARGO) clean
