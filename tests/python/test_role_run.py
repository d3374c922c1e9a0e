"""`make run` on any server: scripts/run (what the target executes after building)
probes the server and takes Tarantool 3's road (config/single.yaml with the
dialogs role) or 2.x's (init.lua); the DIALOGS_* variables a user sets are in force
on both, and refused with the same message when bad.
"""

from __future__ import annotations

import os

import pytest

import config_harness
from config_harness import has_config_module
from dialogs_api import derived_dialog_id, get_dialog, new_dialog, new_user
from harness import DEV_PASSWORD, module_built

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

CONFIG_ROAD = has_config_module()
CONFIG_LINE = "has the declarative configuration: starting config/single.yaml"
INIT_LINE = "dialogs: listening on"

# Every server a test made, stopped when the test ends, whatever its outcome.
_made: list = []


def run_server(*args, **kwargs):
    srv = config_harness.run_server(*args, **kwargs)
    _made.append(srv)
    return srv


@pytest.fixture(autouse=True)
def stop_every_server():
    yield
    while _made:
        _made.pop().stop()


def test_run_serves_the_client_on_the_road_the_server_has(tmp_path):
    srv = run_server(tmp_path).start()
    conn = srv.connect()
    a, b = new_user(), new_user()
    first = new_dialog(conn, None, str(a), str(b), "hello")
    second = new_dialog(conn, None, str(b), str(a), "hi")
    assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == [first, second]
    log = srv.log_of_run()
    if CONFIG_ROAD:
        assert CONFIG_LINE in log and "dialogs: set up as the writable instance" in log
    else:
        assert INIT_LINE in log and CONFIG_LINE not in log
    # DIALOGS_DATA_DIR holds the snapshot and the WAL on either road.
    assert list(srv.data_dir.glob("*.snap")) and list(srv.data_dir.glob("*.xlog"))
    assert srv.password not in srv.log_text()
    # The data survives a restart on the same road.
    srv.restart()
    conn = srv.connect()
    assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == [first, second]


def test_run_without_a_password_uses_the_loopback_development_default(tmp_path):
    srv = run_server(tmp_path, env={"DIALOGS_PASSWORD": None})
    srv.password = DEV_PASSWORD
    srv.start()
    new_dialog(srv.connect(), None, str(new_user()), str(new_user()), "dev")


@pytest.mark.parametrize("env, message", [
    ({"DIALOGS_WAL_MODE": "none"},
     'dialogs: DIALOGS_WAL_MODE: expected one of write, fsync, got "none"'),
    ({"DIALOGS_LISTEN": "0.0.0.0:3301", "DIALOGS_PASSWORD": None},
     "dialogs: DIALOGS_PASSWORD: must be set when DIALOGS_LISTEN (0.0.0.0:3301) is not a "
     "loopback address"),
    ({"DIALOGS_MEMTX_MEMORY": "1024"},
     "dialogs: DIALOGS_MEMTX_MEMORY: must be at least 33554432 bytes, got 1024"),
])
def test_run_refuses_a_bad_variable_naming_it_on_either_road(tmp_path, env, message):
    out = run_server(tmp_path, env=env).run_to_exit()
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


@pytest.mark.skipif(not CONFIG_ROAD, reason="the 2.x road reads the replication variables")
def test_run_on_the_config_road_says_where_a_replication_variable_went(tmp_path):
    out = run_server(tmp_path, env={"DIALOGS_REPLICATION": "127.0.0.1:3302"}).run_to_exit()
    assert out.returncode != 0
    assert ("dialogs: DIALOGS_REPLICATION: not read on Tarantool 3: a replica set is "
            "described by config/replicaset-*.yaml") in out.stderr


@pytest.mark.skipif(not CONFIG_ROAD, reason="the admin socket of the 2.x road is "
                    "DIALOGS_ADMIN_SOCKET, tested with init.lua")
def test_run_on_the_config_road_opens_an_owner_only_console(tmp_path):
    srv = run_server(tmp_path).start()
    assert srv.console.exists()
    assert srv.console.stat().st_mode & 0o077 == 0, oct(srv.console.stat().st_mode)


UPGRADE_FROM = os.environ.get("DIALOGS_UPGRADE_FROM")


@pytest.mark.skipif(not CONFIG_ROAD, reason="the config road needs a server with the "
                    "config module (TARANTOOL)")
@pytest.mark.skipif(not UPGRADE_FROM or has_config_module(UPGRADE_FROM),
                    reason="set DIALOGS_UPGRADE_FROM to a server without the config module "
                    "(e.g. /usr/bin/tarantool, 2.6) to make the data on the 2.x road")
def test_run_on_a_3x_server_takes_over_the_data_of_a_2x_run(tmp_path):
    old = run_server(tmp_path, env={"TARANTOOL": UPGRADE_FROM}, name="old").start()
    a, b = new_user(), new_user()
    first = new_dialog(old.connect(), None, str(a), str(b), "written by the old server")
    old.stop()
    assert INIT_LINE in old.log_of_run()

    new = run_server(tmp_path, name="new").start()
    conn = new.connect()
    second = new_dialog(conn, None, str(a), str(b), "written by the new one")
    assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == [first, second]
    log = new.log_of_run()
    assert "holds data without instance names" in log and CONFIG_LINE in log
    assert "dialogs: box.schema.upgrade() done" in log
