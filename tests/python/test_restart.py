"""The store across restarts of the process on the same data directory."""

import uuid

import pytest
import tarantool

from dialogs_api import ID, TEXT, derived_dialog_id, get_dialog, new_dialog, new_user

MIGRATED = "dialogs: schema migrated to version"
SCHEMA_SPACE_ID = 272  # box.space._schema
SCHEMA_VERSION_KEY = "dialogs_schema_version"
# The schema version this release brings a data directory to (dialogs/schema.lua).
SCHEMA_VERSION = 5


def test_data_survives_a_clean_restart_and_migrations_rerun_harmlessly(server):
    conn = server.connect()
    alice, bob = new_user(), new_user()
    sent = [new_dialog(conn, None, *((alice, bob) if i % 2 else (bob, alice)), f"m{i}")
            for i in range(50)]
    dialog = derived_dialog_id(alice, bob)
    before = get_dialog(conn, dialog)
    assert [str(r[ID]) for r in before] == sent

    first_run = server.log_of_run()
    assert MIGRATED in first_run
    assert server.log_errors() == []

    assert server.stop() == 0, "SIGTERM must stop the server cleanly"
    server.start()
    conn = server.connect()
    assert get_dialog(conn, dialog) == before

    # The schema was already current: no migration ran and nothing complained.
    second_run = server.log_of_run()
    assert MIGRATED not in second_run
    assert server.log_errors() == []

    # New ids keep increasing past everything stored before the restart.
    later = new_dialog(conn, None, alice, bob, "after restart")
    assert uuid.UUID(later) > uuid.UUID(sent[-1])
    assert [r[TEXT] for r in get_dialog(conn, dialog)][-2:] == ["m49", "after restart"]

    # A third start, this time after a snapshot-less crash: the WAL has it all.
    server.restart(hard=True)
    conn = server.connect()
    assert [str(r[ID]) for r in get_dialog(conn, dialog)] == sent + [later]
    assert MIGRATED not in server.log_of_run()

    # On disk: the schema versions were written once each, by the first start (one
    # record per migration: 1, 2, ... up to the current one).
    server.stop()
    writes = [r for r in server.wal_records()
              if r["body"].get("space_id") == SCHEMA_SPACE_ID
              and (r["body"].get("tuple") or r["body"].get("key") or [None])[0]
              == SCHEMA_VERSION_KEY]
    assert [(w["header"]["type"], w["body"]["tuple"]) for w in writes] == \
        [("REPLACE", [SCHEMA_VERSION_KEY, v]) for v in range(1, SCHEMA_VERSION + 1)], writes
    assert writes[0]["file"] == "00000000000000000000.xlog"


def test_request_id_retry_survives_a_restart(server):
    conn = server.connect()
    dialog, a, b = new_user(), new_user(), new_user()
    rid = str(uuid.uuid4())
    first = new_dialog(conn, dialog, a, b, "exactly once", {"request_id": rid})

    server.restart()
    conn = server.connect()
    assert new_dialog(conn, dialog, a, b, "exactly once", {"request_id": rid}) == first
    assert [str(r[ID]) for r in get_dialog(conn, dialog)] == [first]


def test_a_changed_password_takes_effect_on_restart(server):
    conn = server.connect()
    dialog = new_user()
    new_dialog(conn, dialog, new_user(), new_user(), "kept")
    old = server.password
    server.stop()
    server.password = server.env["DIALOGS_PASSWORD"] = "rotated-" + old
    server.start()
    assert len(get_dialog(server.connect(), dialog)) == 1
    with pytest.raises(tarantool.error.NetworkError, match="password|credentials"):
        server.connect(password=old)


def test_without_a_password_loopback_uses_the_development_default(make_server):
    srv = make_server(password=None)
    assert "DIALOGS_PASSWORD" not in srv.child_env()
    conn = srv.connect(password="dialogs")
    dialog = new_user()
    new_dialog(conn, dialog, new_user(), new_user(), "dev")
    assert len(get_dialog(conn, dialog)) == 1
