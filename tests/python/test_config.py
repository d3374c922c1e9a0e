"""init.lua refuses an unsafe or malformed configuration before touching any data:
a non-zero exit and a message naming the variable."""

import re

import pytest
import tarantool

from dialogs_api import get_dialog, new_dialog, new_user
from harness import run_init_expecting_exit

REFUSED = [
    pytest.param({"DIALOGS_LISTEN": "0.0.0.0:{port}", "DIALOGS_PASSWORD": None},
                 "DIALOGS_PASSWORD", id="all-interfaces-without-password"),
    pytest.param({"DIALOGS_LISTEN": "0.0.0.0:{port}", "DIALOGS_PASSWORD": "dialogs"},
                 "DIALOGS_PASSWORD", id="all-interfaces-with-development-password"),
    pytest.param({"DIALOGS_LISTEN": "[::]:{port}", "DIALOGS_PASSWORD": None},
                 "DIALOGS_PASSWORD", id="ipv6-any-without-password"),
    pytest.param({"DIALOGS_LISTEN": "192.0.2.1:{port}", "DIALOGS_PASSWORD": None},
                 "DIALOGS_PASSWORD", id="lan-address-without-password"),
    # A bare port would listen on every interface; init.lua refuses the form itself.
    pytest.param({"DIALOGS_LISTEN": "{port}", "DIALOGS_PASSWORD": None},
                 "DIALOGS_(LISTEN|PASSWORD)", id="bare-port-without-password"),
    pytest.param({"DIALOGS_LISTEN": "127.0.0.1"}, "DIALOGS_LISTEN", id="listen-no-port"),
    pytest.param({"DIALOGS_LISTEN": "127.0.0.1:99999"}, "DIALOGS_LISTEN",
                 id="listen-port-out-of-range"),
    pytest.param({"DIALOGS_MEMTX_MEMORY": "lots"}, "DIALOGS_MEMTX_MEMORY",
                 id="memtx-memory-not-a-number"),
    pytest.param({"DIALOGS_MEMTX_MEMORY": "1024"}, "DIALOGS_MEMTX_MEMORY",
                 id="memtx-memory-too-small"),
    pytest.param({"DIALOGS_WAL_MODE": "none"}, "DIALOGS_WAL_MODE", id="wal-mode-none"),
    pytest.param({"DIALOGS_USER": "guest"}, "DIALOGS_USER", id="user-guest"),
    pytest.param({"DIALOGS_USER": "no spaces"}, "DIALOGS_USER", id="user-malformed"),
    pytest.param({"DIALOGS_LOG_LEVEL": "9"}, "DIALOGS_LOG_LEVEL", id="log-level"),
    pytest.param({"DIALOGS_LIB_DIR": "/nonexistent/dialogs"}, "DIALOGS_LIB_DIR",
                 id="lib-dir-missing"),
    pytest.param({"DIALOGS_REQUEST_TTL": "0"}, "DIALOGS_REQUEST_TTL", id="request-ttl-zero"),
    pytest.param({"DIALOGS_REQUEST_TTL": "7d"}, "DIALOGS_REQUEST_TTL", id="request-ttl-unit"),
]


@pytest.mark.parametrize("env, variable", REFUSED)
def test_bad_configuration_is_refused(tmp_path, env, variable):
    port = "39999"  # never bound: the process must exit before box.cfg
    env = {k: (v.format(port=port) if v else v) for k, v in env.items()}
    result = run_init_expecting_exit(tmp_path, env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert re.search(rf"\b{variable}\b", result.stderr), output
    # Refused up front: no data directory, no snapshot.
    assert not (tmp_path / "data").exists(), list((tmp_path / "data").iterdir())


def test_other_valid_settings_are_accepted_and_in_force(make_server):
    srv = make_server(user="chat_service", wal_mode="fsync", memtx_memory=32 * 1024 * 1024,
                      env={"DIALOGS_LOG_LEVEL": "4"})
    conn = srv.connect()
    dialog = new_user()
    new_dialog(conn, dialog, new_user(), new_user(), "fsynced")
    assert len(get_dialog(conn, dialog)) == 1
    # The default user name is not created when another is configured.
    with pytest.raises(tarantool.error.NetworkError):
        srv.connect(user="dialogs")
    # Log level 4 (warnings): the info-level start-up lines are gone.
    assert "dialogs: listening on" not in srv.log_of_run()
