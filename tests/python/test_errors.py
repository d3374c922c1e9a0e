"""A sample of README's error table over the wire: each bad call gets its stable code
and a message naming the argument, writes nothing, and the next call works."""

import uuid

import pytest
import tarantool

from dialogs_api import (BAD_ARITY, BAD_OPTION, BAD_TEXT, BAD_TYPE, BAD_UUID,
                         ID, REQUEST_CONFLICT, TEXT, derived_dialog_id, expect_error,
                         get_dialog, message_id_of, new_dialog, new_user,
                         results_one_value_each, server_key)

NIL_UUID = "00000000-0000-0000-0000-000000000000"

# (arguments after a valid dialog id, code, exact message, or else a pattern the
# message matches: README gives exact examples only for some)
BAD_NEW_DIALOG = [
    pytest.param(["u1", "u2"], BAD_ARITY,
                 "new_dialog: expected 4 or 5 arguments (dialog_id, user_from, user_to, "
                 "text [, opts]), got 3", None, id="arity-3"),
    pytest.param(["u1", "u2", "t", {}, "extra"], BAD_ARITY, None, r"^new_dialog: ", id="arity-6"),
    pytest.param([True, "u2", "t"], BAD_TYPE,
                 "user_from: expected a uuid (string or msgpack uuid), got boolean", None,
                 id="user_from-boolean"),
    pytest.param(["u1", None, "t"], BAD_TYPE, None, r"^user_to: ", id="user_to-nil"),
    pytest.param(["u1", 42, "t"], BAD_TYPE, None, r"^user_to: ", id="user_to-integer"),
    pytest.param(["u1", "abc", "t"], BAD_UUID, 'user_to: malformed uuid "abc"', None,
                 id="user_to-malformed"),
    pytest.param(["u1", NIL_UUID, "t"], BAD_UUID, None, r"^user_to: ", id="user_to-nil-uuid"),
    # Only the canonical hyphenated form is a uuid string (README "new_dialog").
    pytest.param(["u1", "5d7c0a3e2c114f0e8f553a2b8c1d4e02", "t"], BAD_UUID, None,
                 r"^user_to: ", id="user_to-simple-form"),
    pytest.param(["u1", "{5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02}", "t"], BAD_UUID, None,
                 r"^user_to: ", id="user_to-braced-form"),
    pytest.param(["u1", "urn:uuid:5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02", "t"], BAD_UUID,
                 None, r"^user_to: ", id="user_to-urn-form"),
    pytest.param(["u1", " 5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02", "t"], BAD_UUID, None,
                 r"^user_to: ", id="user_to-leading-space"),
    pytest.param(["u1", "u2", ""], BAD_TEXT, None, r"^text: ", id="text-empty"),
    pytest.param(["u1", "u2", "x" * 4097], BAD_TEXT,
                 "text: must be 1 to 4096 characters, got 4097", None, id="text-4097"),
    pytest.param(["u1", "u2", "🙂" * 4097], BAD_TEXT,
                 "text: must be 1 to 4096 characters, got 4097", None, id="text-4097-emoji"),
    pytest.param(["u1", "u2", 12], BAD_TYPE, None, r"^text: ", id="text-integer"),
    pytest.param(["u1", "u2", b"bytes"], BAD_TYPE, None, r"^text: ", id="text-binary"),
    pytest.param(["u1", "u2", "t", {"bogus": 1}], BAD_OPTION, None, r"^opts\b.*\bbogus\b",
                 id="opts-unknown"),
    pytest.param(["u1", "u2", "t", {"request_id": "nope"}], BAD_UUID, None,
                 "opts.request_id:", id="opts-request_id-malformed"),
    pytest.param(["u1", "u2", "t", "opts"], BAD_TYPE, None, r"^opts: ", id="opts-string"),
]


@pytest.mark.parametrize("args, code, message, pattern", BAD_NEW_DIALOG)
def test_bad_new_dialog_is_refused_and_writes_nothing(conn, args, code, message, pattern):
    dialog, u1, u2 = new_user(), new_user(), new_user()
    args = [str(u1) if a == "u1" else str(u2) if a == "u2" else a for a in args]
    expect_error(lambda: conn.call("new_dialog", [str(dialog), *args]), code, message, pattern)

    assert get_dialog(conn, dialog) == [], "a refused call stored something"
    # The same connection goes on serving.
    new_dialog(conn, dialog, u1, u2, "fine")
    assert [r[TEXT] for r in get_dialog(conn, dialog)] == ["fine"]


def test_malformed_dialog_id_is_refused(conn):
    u1, u2 = new_user(), new_user()
    # A mistyped uuid (a digit short), not a dialog key (README "Dialog keys").
    expect_error(lambda: conn.call("new_dialog", ["5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e0",
                                                  str(u1), str(u2), "t"]),
                 BAD_UUID, 'dialog_id: malformed uuid "5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e0"')
    expect_error(lambda: conn.call("new_dialog", [[1, 2], str(u1), str(u2), "t"]),
                 BAD_TYPE, None, r"^dialog_id: ")
    assert new_dialog(conn, None, u1, u2, "fine")


# (get_dialog arguments after a valid dialog id, code, exact message, pattern)
BAD_GET_DIALOG = [
    pytest.param([{"limit": 0}], BAD_OPTION, "opts.limit: must be 1 to 1000, got 0", None,
                 id="limit-0"),
    pytest.param([{"limit": 1001}], BAD_OPTION, "opts.limit: must be 1 to 1000, got 1001",
                 None, id="limit-1001"),
    pytest.param([{"limit": -1}], BAD_OPTION, None, r"^opts\.limit: ", id="limit-negative"),
    pytest.param([{"limit": "10"}], BAD_TYPE, None, r"^opts\.limit: ", id="limit-string"),
    pytest.param([{"after": "zzz"}], BAD_UUID, None, r"^opts\.after: ", id="after-malformed"),
    pytest.param([{"before": 5}], BAD_TYPE, None, r"^opts\.before: ", id="before-integer"),
    pytest.param([{"reverse": "yes"}], BAD_TYPE, None, r"^opts\.reverse: ", id="reverse-string"),
    pytest.param([{"offset": 10}], BAD_OPTION, None, r"^opts\b.*\boffset\b", id="unknown-option"),
    pytest.param([{}, "extra"], BAD_ARITY, None, r"^get_dialog: ", id="arity-3"),
]


@pytest.mark.parametrize("args, code, message, pattern", BAD_GET_DIALOG)
def test_bad_get_dialog_is_refused(conn, args, code, message, pattern):
    dialog = new_user()
    new_dialog(conn, dialog, new_user(), new_user(), "one")
    expect_error(lambda: conn.call("get_dialog", [str(dialog), *args]), code, message, pattern)
    assert len(get_dialog(conn, dialog)) == 1


def test_get_dialog_without_arguments_or_id(conn):
    expect_error(lambda: conn.call("get_dialog", []), BAD_ARITY, None, r"^get_dialog: ")
    expect_error(lambda: conn.call("get_dialog", [None]), BAD_TYPE, None, r"^dialog_id: ")
    expect_error(lambda: conn.call("get_dialog", ["{5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02}"]),
                 BAD_UUID, 'dialog_id: malformed uuid "{5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02}"')
    # "abc" is a dialog key, of a dialog nobody wrote to.
    assert get_dialog(conn, "abc") == []


# The inbox's refusal of a message that is not the user's in the dialog (README "Errors").
NOT_IN_DIALOG = 1013


def one_value(conn, data):
    """The one value of list_dialogs' or mark_read's reply, in new_dialog's shape
    (README "Reply shape"): [value] where results go one value each, else [[value]]."""
    data = list(data)
    assert len(data) == 1, data
    if results_one_value_each(server_key(conn)):
        return data[0]
    assert isinstance(data[0], (list, tuple)) and len(data[0]) == 1, data
    return data[0][0]

# (list_dialogs arguments after a valid user id, code, exact message, pattern)
BAD_LIST_DIALOGS = [
    pytest.param([{"limit": 0}], BAD_OPTION, "opts.limit: must be 1 to 100, got 0", None,
                 id="limit-0"),
    pytest.param([{"limit": 101}], BAD_OPTION, "opts.limit: must be 1 to 100, got 101", None,
                 id="limit-101"),
    pytest.param([{"limit": "10"}], BAD_TYPE, None, r"^opts\.limit: ", id="limit-string"),
    pytest.param([{"before": "zzz"}], BAD_UUID, 'opts.before: malformed uuid "zzz"', None,
                 id="before-malformed"),
    pytest.param([{"before": NIL_UUID}], BAD_UUID, None, r"^opts\.before: ",
                 id="before-nil-uuid"),
    pytest.param([{"after": str(uuid.uuid4())}], BAD_OPTION, None, r"^opts\b.*\bafter\b",
                 id="unknown-option"),
    pytest.param(["opts"], BAD_TYPE, "opts: expected a map, got string", None,
                 id="opts-string"),
    pytest.param([{}, "extra"], BAD_ARITY,
                 "list_dialogs: expected 1 or 2 arguments (user_id [, opts]), got 3", None,
                 id="arity-3"),
]


@pytest.mark.parametrize("args, code, message, pattern", BAD_LIST_DIALOGS)
def test_bad_list_dialogs_is_refused(conn, args, code, message, pattern):
    me = new_user()
    expect_error(lambda: conn.call("list_dialogs", [str(me), *args]), code, message, pattern)
    # The connection goes on serving: the reply is one map (docs/inbox.md, "What a
    # client sees").
    reply = one_value(conn, conn.call("list_dialogs", [str(me)]).data)
    assert reply["dialogs"] == [] and reply["next"] is None, reply


def test_list_dialogs_without_a_user(conn):
    expect_error(lambda: conn.call("list_dialogs", []), BAD_ARITY,
                 "list_dialogs: expected 1 or 2 arguments (user_id [, opts]), got 0")
    expect_error(lambda: conn.call("list_dialogs", [None]), BAD_TYPE,
                 "user_id: expected a uuid (string or msgpack uuid), got nil")
    expect_error(lambda: conn.call("list_dialogs", [7]), BAD_TYPE, None, r"^user_id: ")
    expect_error(lambda: conn.call("list_dialogs", ["abc"]), BAD_UUID,
                 'user_id: malformed uuid "abc"')
    expect_error(lambda: conn.call("list_dialogs", [NIL_UUID]), BAD_UUID,
                 "user_id: the nil uuid is not a valid id")


# (mark_read arguments: "me", "dialog", "msg" stand for a user, its dialog and a
# message of it; code, exact message, pattern)
BAD_MARK_READ = [
    pytest.param([], BAD_ARITY,
                 "mark_read: expected 3 arguments (user_id, dialog_id, up_to_id), got 0", None,
                 id="arity-0"),
    pytest.param(["me", "dialog"], BAD_ARITY, None, r"^mark_read: ", id="arity-2"),
    pytest.param(["me", "dialog", "msg", {}], BAD_ARITY, None, r"^mark_read: ", id="arity-4"),
    pytest.param([None, "dialog", "msg"], BAD_TYPE, None, r"^user_id: ", id="user_id-nil"),
    pytest.param(["abc", "dialog", "msg"], BAD_UUID, 'user_id: malformed uuid "abc"', None,
                 id="user_id-malformed"),
    pytest.param(["me", 5, "msg"], BAD_TYPE, None, r"^dialog_id: ", id="dialog_id-integer"),
    pytest.param(["me", "{5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02}", "msg"], BAD_UUID, None,
                 r"^dialog_id: ", id="dialog_id-braced"),
    pytest.param(["me", "dialog", True], BAD_TYPE,
                 "up_to_id: expected a uuid (string or msgpack uuid), got boolean", None,
                 id="up_to_id-boolean"),
    pytest.param(["me", "dialog", "zzz"], BAD_UUID, 'up_to_id: malformed uuid "zzz"', None,
                 id="up_to_id-malformed"),
    pytest.param(["me", "dialog", NIL_UUID], BAD_UUID, "up_to_id: the nil uuid is not a valid id",
                 None, id="up_to_id-nil-uuid"),
    pytest.param(["me", "dialog", "unknown"], NOT_IN_DIALOG,
                 "up_to_id: not a message of this user in this dialog", None,
                 id="up_to_id-unknown"),
    pytest.param(["me", "other", "msg"], NOT_IN_DIALOG,
                 "up_to_id: not a message of this user in this dialog", None,
                 id="up_to_id-another-dialog"),
    pytest.param(["stranger", "dialog", "msg"], NOT_IN_DIALOG,
                 "up_to_id: not a message of this user in this dialog", None,
                 id="up_to_id-another-user"),
]


@pytest.mark.parametrize("args, code, message, pattern", BAD_MARK_READ)
def test_bad_mark_read_is_refused(conn, args, code, message, pattern):
    peer, me = new_user(), new_user()
    dialog = derived_dialog_id(peer, me)
    msg = new_dialog(conn, None, peer, me, "unread")
    names = {"me": str(me), "dialog": str(dialog), "msg": msg, "other": str(new_user()),
             "stranger": str(new_user()), "unknown": str(uuid.uuid4())}
    args = [names.get(a, a) if isinstance(a, str) else a for a in args]
    expect_error(lambda: conn.call("mark_read", args), code, message, pattern)
    # The connection goes on serving, and the refusal moved nothing: the message
    # is still after the cursor until now (one unsigned, docs/inbox.md, "What a
    # client sees").
    assert one_value(conn, conn.call("mark_read", [str(me), str(dialog), msg]).data) == 0


def test_request_id_makes_a_retry_safe(conn):
    dialog, a, b = new_user(), new_user(), new_user()
    rid = str(uuid.uuid4())
    first = new_dialog(conn, dialog, a, b, "once", {"request_id": rid})
    again = new_dialog(conn, dialog, a, b, "once", {"request_id": rid})
    # The same request id sent as a msgpack uuid is the same request.
    third = new_dialog(conn, str(dialog), str(a), str(b), "once",
                       {"request_id": uuid.UUID(rid)})
    # Upper-case hex is the same uuid (README), for the request id and the users.
    fourth = new_dialog(conn, str(dialog).upper(), str(a).upper(), str(b), "once",
                        {"request_id": rid.upper()})
    assert first == again == third == fourth
    assert [str(r[0]) for r in get_dialog(conn, dialog)] == [first]

    err = expect_error(
        lambda: new_dialog(conn, dialog, a, b, "other text", {"request_id": rid}),
        REQUEST_CONFLICT,
        f"opts.request_id: already used for message {first} with other content")
    assert err
    assert len(get_dialog(conn, dialog)) == 1

    # Same text, but another recipient or another dialog: still another message.
    for args in [(dialog, a, new_user()), (new_user(), a, b), (None, a, b)]:
        expect_error(lambda: new_dialog(conn, *args, "once", {"request_id": rid}),
                     REQUEST_CONFLICT, None, r"^opts\.request_id: ")
    assert len(get_dialog(conn, dialog)) == 1

    # Another request id is another message.
    other = new_dialog(conn, dialog, a, b, "once", {"request_id": str(uuid.uuid4())})
    assert other != first
    assert len(get_dialog(conn, dialog)) == 2


def test_request_id_with_a_derived_dialog(conn):
    a, b = new_user(), new_user()
    rid = uuid.uuid4()
    first = new_dialog(conn, None, a, b, "derived", {"request_id": rid})
    assert new_dialog(conn, None, a, b, "derived", {"request_id": str(rid)}) == first
    # Naming the derived dialog explicitly is the same message too.
    assert new_dialog(conn, derived_dialog_id(a, b), a, b, "derived",
                      {"request_id": rid}) == first
    assert len(get_dialog(conn, derived_dialog_id(a, b))) == 1


def test_opts_may_be_nil_or_empty(conn):
    dialog, a, b = new_user(), new_user(), new_user()
    sent = [message_id_of(server_key(conn), conn.call(
        "new_dialog", [str(dialog), str(a), str(b), text, opts]).data)
        for text, opts in [("nil opts", None), ("empty opts", {})]]
    rows = get_dialog(conn, dialog, {})
    assert [str(r[ID]) for r in rows] == sent
    assert [r[TEXT] for r in rows] == ["nil opts", "empty opts"]


FIRST_USER_SPACE_ID = 512
# Fields of an inbox entry and of a user's totals (docs/inbox.md, "The model").
ENTRY_FIELDS = 10
TOTALS_FIELDS = 4


def test_refused_calls_write_nothing_to_the_wal(server):
    """Below the replies: not one WAL record for any refused call."""
    conn = server.connect()
    dialog, u1, u2 = str(new_user()), str(new_user()), str(new_user())
    refused = 0
    for param in BAD_NEW_DIALOG:
        args = [u1 if a == "u1" else u2 if a == "u2" else a for a in param.values[0]]
        with pytest.raises(tarantool.error.DatabaseError):
            conn.call("new_dialog", [dialog, *args])
        refused += 1
    for param in BAD_GET_DIALOG:
        with pytest.raises(tarantool.error.DatabaseError):
            conn.call("get_dialog", [dialog, *param.values[0]])
        refused += 1
    rid = str(uuid.uuid4())
    new_dialog(conn, dialog, u1, u2, "the one message", {"request_id": rid})
    with pytest.raises(tarantool.error.DatabaseError):
        conn.call("new_dialog", [dialog, u1, u2, "conflicting", {"request_id": rid}])
    assert refused == len(BAD_NEW_DIALOG) + len(BAD_GET_DIALOG)
    server.stop()

    user_writes = [r for r in server.wal_records()
                   if r["body"].get("space_id", 0) >= FIRST_USER_SPACE_ID]
    texts = [r["body"]["tuple"][TEXT] for r in user_writes if len(r["body"]["tuple"]) == 7]
    assert texts == ["the one message"], user_writes
    # The message and its request_id record; and, once the inbox is built (schema
    # version 5), its upkeep in the same transaction: the two users' entries (10
    # fields) and the recipient's totals (4 fields). Nothing else.
    inbox = [r for r in user_writes if len(r["body"]["tuple"]) in (ENTRY_FIELDS, TOTALS_FIELDS)]
    assert len(user_writes) - len(inbox) == 2, user_writes
    assert sorted(len(r["body"]["tuple"]) for r in inbox) in (
        [], [TOTALS_FIELDS, ENTRY_FIELDS, ENTRY_FIELDS]), user_writes
