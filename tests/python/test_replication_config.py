"""init.lua refuses a bad replication configuration before touching the database:
a non-zero exit and a message naming the variable (docs/replication-section.md)."""

import pytest

from harness import module_built, run_init_expecting_exit

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
