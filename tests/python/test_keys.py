"""String dialog keys (README "Dialog keys"): a dialog_id string that is not a uuid
names a dialog, UUIDv5(KEY_NAMESPACE, its bytes); one key is one dialog for writes,
reads, cursors and retries. And the report's own service, as its author wrote it:
string keys, the synchronous connector, data[0] and fields 2, 3, 4."""

from __future__ import annotations

import json
import uuid

import pytest
import tarantool

from dialogs_api import (BAD_UUID, DIALOG_ID, ID, TEXT, USER_FROM, USER_TO, expect_error,
                         get_dialog, key_dialog_id, murmur3_32, new_dialog, new_user,
                         report_key, results_one_value_each, server_key, walk_dialog)
from harness import module_built
from sharded import make_cluster, needs_vshard  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")


def test_the_report_key_is_its_murmur3_order():
    """The key the report's service builds: the two canonical strings, the one
    with the smaller unsigned murmur3 (seed 0) first; 72 characters."""
    a, b = new_user(), new_user()
    key = report_key(a, b)
    assert key == report_key(b, a) and len(key) == 72
    first, second = key[:36], key[36:]
    assert {first, second} == {str(a), str(b)}
    assert murmur3_32(first.encode()) <= murmur3_32(second.encode())
    # Published MurmurHash3 x86_32 values, so the order above is the real one.
    assert murmur3_32(b"") == 0 and murmur3_32(b"abc") == 0xB3DD93FA
    assert murmur3_32(b"Hello, world!", 0x9747B28C) == 0x24884CBA


def test_a_key_names_one_dialog(conn):
    a, b = new_user(), new_user()
    key = report_key(a, b)
    first = new_dialog(conn, key, str(a), str(b), "hi")
    second = new_dialog(conn, key, str(b), str(a), "hi back")
    dialog = key_dialog_id(key)
    rows = get_dialog(conn, key)
    assert [str(r[ID]) for r in rows] == [first, second]
    assert [r[TEXT] for r in rows] == ["hi", "hi back"]
    assert [(r[USER_FROM], r[USER_TO]) for r in rows] == [(a, b), (b, a)]
    # Stored under the key's dialog: the same page by the uuid, as string or msgpack.
    assert all(r[DIALOG_ID] == dialog for r in rows)
    assert get_dialog(conn, str(dialog)) == rows
    assert [r[ID] for r in conn.call("get_dialog", [dialog]).data[0]] == [r[ID] for r in rows]
    # Another key, even one character apart, is another dialog.
    assert get_dialog(conn, key[:-1] + ("0" if key[-1] != "0" else "1")) == []


def test_keys_of_any_utf8_up_to_255_bytes(conn):
    a, b = str(new_user()), str(new_user())
    # Each key made unique by a uuid of its own (36 bytes) at its end.
    for prefix in ["x", "чат №1 ", "deadbeef", "k" * 219, "ключ" + "я" * 105 + "x"]:
        key = prefix + str(uuid.uuid4())
        assert len(key.encode()) <= 255
        mid = new_dialog(conn, key, a, b, f"in {prefix[:8]}")
        rows = get_dialog(conn, key)
        assert [str(r[ID]) for r in rows] == [mid]
        assert rows[0][DIALOG_ID] == key_dialog_id(key)
    assert len(("k" * 219 + str(uuid.uuid4())).encode()) == 255


def test_a_key_pages_with_cursors_both_ways(conn):
    a, b = str(new_user()), str(new_user())
    key = f"paged {a}"
    ids = [new_dialog(conn, key, a, b, f"m{i}") for i in range(23)]
    pages = list(walk_dialog(conn, key, 5))
    assert [str(r[ID]) for page in pages for r in page] == ids
    back = list(walk_dialog(conn, key, 4, newest_first=True))
    assert [str(r[ID]) for page in back for r in page] == ids[::-1]


def test_a_retry_by_key_or_by_its_uuid_is_one_request(conn):
    a, b = str(new_user()), str(new_user())
    key = report_key(uuid.UUID(a), uuid.UUID(b))
    rid = str(uuid.uuid4())
    first = new_dialog(conn, key, a, b, "once", {"request_id": rid})
    assert new_dialog(conn, key, a, b, "once", {"request_id": rid}) == first
    assert new_dialog(conn, str(key_dialog_id(key)), a, b, "once", {"request_id": rid}) == first
    assert len(get_dialog(conn, key)) == 1
    # The same request id for another dialog is a conflict, as for uuids.
    expect_error(lambda: new_dialog(conn, key + "x", a, b, "once", {"request_id": rid}), 1007)


def test_a_canonical_uuid_string_stays_that_uuid(conn):
    a, b = str(new_user()), str(new_user())
    dialog = str(uuid.uuid4())
    new_dialog(conn, dialog, a, b, "by uuid")
    assert [r[DIALOG_ID] for r in get_dialog(conn, dialog)] == [uuid.UUID(dialog)]
    assert get_dialog(conn, dialog.upper())[0][DIALOG_ID] == uuid.UUID(dialog)
    # Not the key of the same text.
    assert get_dialog(conn, str(key_dialog_id(dialog))) == []


@pytest.mark.parametrize("bad, message", [
    ("", "dialog_id: a dialog key must be 1 to 255 bytes, got 0"),
    ("k" * 256, "dialog_id: a dialog key must be 1 to 255 bytes, got 256"),
    ("{5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02}",
     'dialog_id: malformed uuid "{5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02}"'),
    ("urn:uuid:5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02",
     'dialog_id: malformed uuid "urn:uuid:5d7c0a3e-2c11-4f0e-8f55-3a2b8c1…"'),
    ("5d7c0a3e2c114f0e8f553a2b8c1d4e02", 'dialog_id: malformed uuid "5d7c0a3e2c114f0e8f553a2b8c1d4e02"'),
    ("5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e0", 'dialog_id: malformed uuid "5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e0"'),
])
def test_bad_keys_are_refused_and_write_nothing(conn, bad, message):
    a, b = str(new_user()), str(new_user())
    expect_error(lambda: conn.call("new_dialog", [bad, a, b, "t"]), BAD_UUID, message)
    expect_error(lambda: conn.call("get_dialog", [bad]), BAD_UUID, message)
    # Nothing stored for the pair, and the next call is served.
    key = f"after a refusal {a}"
    new_dialog(conn, key, a, b, "served")
    assert [r[TEXT] for r in get_dialog(conn, key)] == ["served"]


class ReportService:
    """The report's dialogs service, call for call: the synchronous connector, the
    key of the two users, `data[0]` of each reply, fields 2, 3, 4 of each message,
    and the id JSON-encoded as its HTTP reply."""

    def __init__(self, host: str, port: int, user=None, password=None):
        self.conn = tarantool.Connection(host, port, user=user, password=password)

    def send(self, user_from: str, user_to: str, text: str) -> str:
        key = report_key(uuid.UUID(user_from), uuid.UUID(user_to))
        data = self.conn.call("new_dialog", (key, user_from, user_to, text))
        return json.dumps(data[0])

    def list(self, user_a: str, user_b: str) -> list:
        key = report_key(uuid.UUID(user_a), uuid.UUID(user_b))
        data = self.conn.call("get_dialog", key)
        return [(str(m[2]), str(m[3]), m[4]) for m in data[0]]

    def close(self):
        self.conn.close()


def check_the_reports_service(srv):
    """The service's send and list against `srv` (a store or a router): only the
    service's connection line differs (it logs in as the application user here;
    guest by opt-in is tested with the guest setting)."""
    service = ReportService(srv.host, srv.port, srv.user, srv.password)
    try:
        alice, bob = str(new_user()), str(new_user())
        sent = [(alice, bob, "Привет"), (bob, alice, "hi!"), (alice, bob, "how are you?")]
        replies = [service.send(*m) for m in sent]
        one_each = results_one_value_each(server_key(service.conn))
        for reply in replies:
            value = json.loads(reply)
            # Tarantool 3's shape, which the service expects: the id string itself.
            if one_each:
                assert isinstance(value, str) and uuid.UUID(value).version == 7, reply
            else:
                assert isinstance(value, list) and uuid.UUID(value[0]).version == 7, reply
        assert service.list(alice, bob) == sent
        assert service.list(bob, alice) == sent
        assert service.list(alice, str(new_user())) == []
    finally:
        service.close()


def test_the_reports_service_sends_and_lists(shared_server):
    check_the_reports_service(shared_server)


@needs_vshard
def test_the_reports_service_through_a_router(make_cluster):
    cluster = make_cluster({"s1": 1, "s2": 1})
    check_the_reports_service(cluster.routers[0])
