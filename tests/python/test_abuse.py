"""Hostile or broken clients: bytes no connector sends, bursts then a hang-up. The
server refuses what is wrong, keeps what it acknowledged intact, and goes on."""

import uuid

import msgpack

from dialogs_api import (BAD_OPTION, BAD_TEXT, BAD_TYPE, ER_INVALID_MSGPACK,
                         INVALID_MSGPACK_BODY, ID, TEXT, checks_request_extensions, get_dialog,
                         new_dialog, new_user)
from iproto_raw import RawConnection

BURST = 2000


def raw_login(server) -> RawConnection:
    return RawConnection(server.host, server.port, server.user, server.password)


def mp_array(*encoded: bytes) -> bytes:
    """A msgpack array of already encoded items (fewer than 16)."""
    return bytes([0x90 | len(encoded)]) + b"".join(encoded)


def test_text_that_is_not_utf8_is_refused(shared_server):
    raw = raw_login(shared_server)
    dialog, a, b = (str(new_user()) for _ in range(3))
    for bad in (b"\xa2\xff\xfe", b"\xa3h\xc3\x28", b"\xa3\xed\xa0\x80"):  # lone surrogate
        code, message = raw.call("new_dialog", mp_array(*(msgpack.packb(x) for x in
                                                           (dialog, a, b)), bad))
        assert code == BAD_TEXT and message.startswith("text: "), (bad, code, message)
    conn = shared_server.connect()
    assert get_dialog(conn, dialog) == []
    assert new_dialog(conn, dialog, a, b, "valid")


def test_malformed_options_from_raw_msgpack(shared_server):
    raw = raw_login(shared_server)
    dialog = msgpack.packb(str(new_user()))
    # A map with the same key twice.
    twice = b"\x82" + msgpack.packb("limit") + msgpack.packb(1) \
        + msgpack.packb("limit") + msgpack.packb(2)
    code, message = raw.call("get_dialog", mp_array(dialog, twice))
    assert code == BAD_OPTION and "limit" in message, (code, message)
    # An option name that is not a string.
    code, message = raw.call("get_dialog", mp_array(dialog, msgpack.packb({1: 2})))
    assert code == BAD_OPTION and message.startswith("opts"), (code, message)
    # A msgpack uuid of the wrong length: refused by the server itself where it
    # checks extensions in requests, else by the procedure (README "Errors").
    short = msgpack.packb(msgpack.ExtType(2, b"\x01\x02\x03"))
    code, message = raw.call("get_dialog", mp_array(short))
    if checks_request_extensions():
        assert (code, message) == (ER_INVALID_MSGPACK, INVALID_MSGPACK_BODY)
    else:
        assert (code, message) == (BAD_TYPE, "dialog_id: expected a uuid (string or msgpack "
                                             "uuid), got malformed uuid extension")
    # Another extension type where a uuid belongs (ext 1: decimal, a valid one).
    code, message = raw.call("get_dialog", mp_array(msgpack.packb(msgpack.ExtType(1, b"\x00\x0c"))))
    assert (code, message) == (BAD_TYPE, "dialog_id: expected a uuid (string or msgpack uuid) "
                                         "or a dialog key (string), got decimal")
    # The same connection still answers a good call.
    code, data = raw.call("get_dialog", mp_array(dialog))
    assert code == 0, data


def test_a_burst_then_a_hang_up_leaves_the_server_serving(shared_server):
    raw = raw_login(shared_server)
    dialog, a, b = new_user(), new_user(), new_user()
    head = [msgpack.packb(str(u)) for u in (dialog, a, b)]
    for i in range(BURST):
        raw.send_call("new_dialog", mp_array(*head, msgpack.packb(f"burst {i}")))
    raw.abort()

    conn = shared_server.connect()
    # Whatever was stored is whole and in order; the rest was never stored.
    stored = []
    after = None
    while True:
        opts = {"limit": 1000, **({"after": after} if after else {})}
        page = get_dialog(conn, dialog, opts)
        stored += page
        if len(page) < 1000:
            break
        after = str(page[-1][ID])
    texts = [r[TEXT] for r in stored]
    assert texts == [f"burst {i}" for i in range(len(texts))]
    assert [r[ID] for r in stored] == sorted(r[ID] for r in stored)
    assert shared_server.is_running()
    assert uuid.UUID(new_dialog(conn, dialog, a, b, "after the burst"))
