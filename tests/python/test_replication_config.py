"""init.lua refuses a bad replication configuration before touching the database:
a non-zero exit and a message naming the variable (docs/operations.md, "Replication"),
and its admin socket replaces nothing but a stale socket."""

import socket
import stat

import pytest

from harness import admin_eval, module_built, run_init_expecting_exit

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

PEER = "127.0.0.1:3302"
WITH_PEERS = {"DIALOGS_REPLICATION": PEER, "DIALOGS_REPLICATION_PASSWORD": "pw"}

REFUSED = [
    ({"DIALOGS_REPLICATION": PEER}, "DIALOGS_REPLICATION_PASSWORD"),
    ({**WITH_PEERS, "DIALOGS_REPLICATION": "127.0.0.1:x"}, "DIALOGS_REPLICATION"),
    ({**WITH_PEERS, "DIALOGS_REPLICATION": f"{PEER},,"}, "DIALOGS_REPLICATION"),
    ({**WITH_PEERS, "DIALOGS_REPLICATION": f"u:secret@{PEER}"}, "DIALOGS_REPLICATION"),
    ({**WITH_PEERS, "DIALOGS_READ_ONLY": "yes"}, "DIALOGS_READ_ONLY"),
    ({"DIALOGS_READ_ONLY": "true"}, "DIALOGS_READ_ONLY"),
    ({**WITH_PEERS, "DIALOGS_REPLICATION_USER": "dialogs"}, "DIALOGS_REPLICATION_USER"),
    ({**WITH_PEERS, "DIALOGS_REPLICATION_USER": "admin"}, "DIALOGS_REPLICATION_USER"),
    ({**WITH_PEERS, "DIALOGS_REPLICATION_PASSWORD": "a@b"}, "DIALOGS_REPLICATION_PASSWORD"),
    ({**WITH_PEERS, "DIALOGS_SYNC_QUORUM": "0"}, "DIALOGS_SYNC_QUORUM"),
    ({**WITH_PEERS, "DIALOGS_SYNC_QUORUM": "two"}, "DIALOGS_SYNC_QUORUM"),
    ({**WITH_PEERS, "DIALOGS_SYNC_QUORUM": "33"}, "DIALOGS_SYNC_QUORUM"),
    ({**WITH_PEERS, "DIALOGS_SYNC_TIMEOUT": "5"}, "DIALOGS_SYNC_TIMEOUT"),
    ({**WITH_PEERS, "DIALOGS_SYNC_QUORUM": "2", "DIALOGS_SYNC_TIMEOUT": "-1"},
     "DIALOGS_SYNC_TIMEOUT"),
    ({**WITH_PEERS, "DIALOGS_REPLICATION_CONNECT_TIMEOUT": "0"},
     "DIALOGS_REPLICATION_CONNECT_TIMEOUT"),
    ({"DIALOGS_ADMIN_SOCKET": "/nonexistent-dir/admin.sock"}, "DIALOGS_ADMIN_SOCKET"),
    ({"DIALOGS_ADMIN_SOCKET": "/tmp/" + "x" * 120}, "DIALOGS_ADMIN_SOCKET"),
]


@pytest.mark.parametrize("env,variable", REFUSED, ids=[f"{v}-{i}" for i, (_, v) in
                                                       enumerate(REFUSED)])
def test_bad_replication_configuration_is_refused(tmp_path, env, variable):
    result = run_init_expecting_exit(tmp_path, env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert variable in result.stderr, output
    # The password never appears in what init.lua prints.
    assert "secret" not in output
    assert not (tmp_path / "data").exists()


# --- DIALOGS_ADMIN_SOCKET never removes what is not its own ---------------------------


def test_admin_socket_over_a_regular_file_stops_the_start_and_keeps_the_file(tmp_path):
    path = tmp_path / "admin.sock"
    path.write_text("precious")
    result = run_init_expecting_exit(tmp_path, {"DIALOGS_ADMIN_SOCKET": str(path)})
    assert result.returncode != 0, result.stdout + result.stderr
    assert (f"DIALOGS_ADMIN_SOCKET: {path} exists and is not a unix socket; refusing to "
            f"replace it") in result.stderr
    assert path.read_text() == "precious"
    assert not (tmp_path / "data").exists()


def test_admin_socket_of_a_live_listener_stops_the_start_and_keeps_serving(tmp_path):
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen(8)
        result = run_init_expecting_exit(tmp_path, {"DIALOGS_ADMIN_SOCKET": str(path)})
        assert result.returncode != 0, result.stdout + result.stderr
        assert (f"DIALOGS_ADMIN_SOCKET: another process is listening on {path}"
                in result.stderr)
        # Still the other process's socket: a client reaches it.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(path))
    assert not (tmp_path / "data").exists()


def test_a_second_instance_on_the_same_admin_socket_is_refused(make_server, tmp_path):
    first = make_server("first", env={"DIALOGS_ADMIN_SOCKET": str(tmp_path / "a.sock")})
    result = run_init_expecting_exit(tmp_path / "second",
                                     {"DIALOGS_ADMIN_SOCKET": str(tmp_path / "a.sock")})
    assert result.returncode != 0
    assert "another process is listening on" in result.stderr
    # The first instance's console still answers.
    assert admin_eval(first, "box.info.ro") is False


def test_a_stale_admin_socket_is_replaced(make_server, tmp_path):
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a previous run's
    assert stat.S_ISSOCK(path.lstat().st_mode)
    srv = make_server(env={"DIALOGS_ADMIN_SOCKET": str(path)})
    assert admin_eval(srv, "box.info.ro") is False
    assert oct(path.stat().st_mode & 0o777) == "0o600"
