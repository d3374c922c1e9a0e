"""The harness itself, so that crash, access and replication tests can lean on it."""

import os
import signal
import socket

import pytest
import tarantool

from harness import ServerError


def test_servers_run_side_by_side_and_stop_by_pid(make_server):
    a = make_server("a")
    b = make_server("b", env={"DIALOGS_LOG_LEVEL": "6"})
    assert a.port != b.port and a.data_dir != b.data_dir
    assert a.connect().ping() and b.connect().ping()
    assert "dialogs: listening on" in a.log_text()
    # Extra variables reach the process: at log level 6 (verbose) Tarantool writes
    # verbose lines (level letter V, the same on every server), at the default 5
    # none.
    assert " V> " in b.log_of_run()
    assert " V> " not in a.log_of_run()

    pid = a.pid
    assert a.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert b.is_running()
    with pytest.raises(tarantool.error.NetworkError):
        a.connect()


def test_restart_reuses_dir_and_port_after_kill_9(make_server):
    srv = make_server()
    port, first_pid = srv.port, srv.pid
    assert srv.kill() == -signal.SIGKILL
    srv.start()
    assert srv.pid != first_pid and srv.port == port
    assert srv.connect().ping()
    assert srv.log_text().count("=== start ") == 2
    assert "=== start" not in srv.log_of_run()


def test_a_server_that_cannot_start_reports_its_log(make_server):
    srv = make_server(start=False, env={"DIALOGS_WAL_MODE": "sometimes"})
    with pytest.raises(ServerError, match="DIALOGS_WAL_MODE"):
        srv.start(timeout=10)
    assert srv.process.returncode != 0


def test_a_port_taken_before_the_first_start_is_replaced(make_server):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    try:
        srv = make_server(start=False)
        srv.port = taken
        srv.env["DIALOGS_LISTEN"] = srv.listen
        srv.start()
        assert srv.port != taken
        assert srv.connect().ping()
        assert "Address already in use" in srv.log_text()
    finally:
        squatter.close()
