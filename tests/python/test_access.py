"""Who may do what over the network (DESIGN "Security"): the application user calls
the two procedures and nothing else; guest gets nothing; bad credentials are refused."""

import re

import pytest
import tarantool

from dialogs_api import (ER_CREDS_MISMATCH, ER_NO_SUCH_USER, ER_PASSWORD_MISMATCH, TEXT,
                         get_dialog, has_creds_mismatch, new_dialog, new_user)

ACCESS_DENIED = 42  # Tarantool's ER_ACCESS_DENIED
FIRST_USER_SPACE_ID = 512
# Well past the few spaces init.lua creates.
SPACE_ID_SCAN = range(FIRST_USER_SPACE_ID, FIRST_USER_SPACE_ID + 32)


def space_ids_by_name(conn) -> dict:
    """The ids of the spaces `conn`'s user cannot see: each select is refused with an
    access error naming the space. (Such a user cannot read _vspace for them.)"""
    found = {}
    for space_id in SPACE_ID_SCAN:
        try:
            conn.select(space_id, limit=1)
        except tarantool.error.DatabaseError as e:
            m = re.match(r"Read access to space '(\w+)' is denied", e.message)
            if m:
                found[m.group(1)] = space_id
        else:
            found.setdefault("<readable>", []).append(space_id)
    return found


def assert_denied(fn, what: str):
    with pytest.raises(tarantool.error.DatabaseError) as info:
        fn()
    err = info.value
    assert not isinstance(err, tarantool.error.NetworkError), repr(err)
    assert err.code == ACCESS_DENIED, f"{what}: {err.code} {err.message}"
    return err.message


def stored_dialog(server):
    """A dialog with one message, written by the application user."""
    c = server.connect()
    dialog = new_user()
    new_dialog(c, dialog, new_user(), new_user(), "private")
    return c, dialog


def test_application_user_may_call_both_procedures_and_nothing_else(shared_server):
    conn, dialog = stored_dialog(shared_server)
    user = shared_server.user
    spaces = space_ids_by_name(conn)
    assert "<readable>" not in spaces, f"user {user} can read spaces {spaces}"
    assert {"dialogs", "dialogs_requests"} <= set(spaces), spaces
    msgs = get_dialog(conn, dialog)
    row = list(msgs[0])

    for name, space in spaces.items():
        assert_denied(lambda: conn.select(space), f"select {name}")
        assert_denied(lambda: conn.insert(space, row), f"insert {name}")
        assert_denied(lambda: conn.replace(space, row), f"replace {name}")
        assert_denied(lambda: conn.delete(space, [row[0]]), f"delete {name}")
        assert_denied(lambda: conn.update(space, [row[0]], [("=", 5, "x")]), f"update {name}")
    assert_denied(lambda: conn.call("box.space.dialogs:select", []), "box.space call")
    assert_denied(lambda: conn.call("box.space.dialogs:truncate", []), "truncate")
    assert_denied(lambda: conn.call("box.schema.user.grant", [user, "read", "space",
                                                              "dialogs"]), "grant")
    message = assert_denied(lambda: conn.eval("return box.space.dialogs:count()"), "eval")
    assert user in message
    assert_denied(lambda: conn.call("dialogs_test_panic", []), "test-only procedure")

    # Nothing above changed the dialog, and the user still works.
    assert get_dialog(conn, dialog) == msgs
    new_dialog(conn, dialog, new_user(), new_user(), "still here")
    assert [r[TEXT] for r in get_dialog(conn, dialog)] == ["private", "still here"]


def test_guest_gets_nothing(shared_server):
    app, dialog = stored_dialog(shared_server)
    guest = shared_server.connect(user=None, password=None)
    for proc, args in [("new_dialog", [None, str(new_user()), str(new_user()), "hi"]),
                       ("get_dialog", [str(dialog)])]:
        message = assert_denied(lambda: guest.call(proc, args), proc)
        assert "guest" in message
    spaces = space_ids_by_name(guest)
    assert "<readable>" not in spaces and "dialogs" in spaces, spaces
    assert_denied(lambda: guest.select(spaces["dialogs"]), "guest select")
    assert_denied(lambda: guest.eval("return 1"), "guest eval")
    assert [r[TEXT] for r in get_dialog(app, dialog)] == ["private"]


@pytest.mark.parametrize("user, password", [
    pytest.param(None, "wrong-password", id="wrong-password"),
    pytest.param(None, "", id="empty-password"),
    pytest.param(None, "dialogs", id="development-default-password"),
    pytest.param("nobody", "e2e-secret-pw", id="unknown-user"),
    pytest.param("admin", "", id="admin"),
])
def test_bad_credentials_are_refused(shared_server, user, password):
    user = user or shared_server.user
    with pytest.raises(tarantool.error.NetworkError) as info:
        shared_server.connect(user=user, password=password)
    # The login's error reply (README "Errors"): where box.error.CREDS_MISMATCH
    # exists, one answer whatever was wrong; before it, which part was wrong.
    refusal = info.value.__cause__
    assert isinstance(refusal, tarantool.error.DatabaseError), repr(info.value)
    if has_creds_mismatch():
        expected = (ER_CREDS_MISMATCH, "User not found or supplied credentials are invalid")
    elif user == "nobody":
        expected = (ER_NO_SUCH_USER, "User 'nobody' is not found")
    else:
        expected = (ER_PASSWORD_MISMATCH, f"Incorrect password supplied for user '{user}'")
    assert (refusal.code, refusal.message) == expected
    assert shared_server.is_running()
    ok = shared_server.connect()
    assert get_dialog(ok, new_user()) == []
