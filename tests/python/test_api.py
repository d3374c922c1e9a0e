"""new_dialog / get_dialog over the network with the `tarantool` connector, as the
seed's clients use them: replies, stored tuples, cursors (README "API")."""

import threading
import time
import uuid

import pytest
import tarantool

from admin import remove_socket_dir, start_admin_server
from dialogs_api import (CREATED_AT, DIALOG_ID, ID, MAX_PAGE, MULTIRETURN_PROBE_LUA, TEXT,
                         USER_FROM, USER_TO, derived_dialog_id, get_dialog, message_id_of,
                         multireturn_of_binary, new_dialog, new_user,
                         results_one_value_each, server_key, tarantool_supports_datetime,
                         walk_dialog)

HAS_DATETIME = tarantool_supports_datetime()
# How far created_at may be from this machine's clock (same host, generous for CI).
CLOCK_SLACK_S = 5.0


def test_string_uuids_return_a_string_id_and_store_the_message(conn):
    dialog, alice, bob = new_user(), new_user(), new_user()
    before = time.time()
    msg_id = new_dialog(conn, str(dialog), str(alice), str(bob), "hi Bob")
    after = time.time()

    assert isinstance(msg_id, str)
    assert str(uuid.UUID(msg_id)) == msg_id, "canonical lowercase form"
    assert uuid.UUID(msg_id).version == 7

    rows = get_dialog(conn, dialog)
    assert len(rows) == 1
    row = rows[0]
    assert len(row) == 6
    assert row[ID] == uuid.UUID(msg_id)
    assert row[DIALOG_ID] == dialog
    assert row[USER_FROM] == alice
    assert row[USER_TO] == bob
    assert row[TEXT] == "hi Bob"
    for field in (ID, DIALOG_ID, USER_FROM, USER_TO):
        assert isinstance(row[field], uuid.UUID), f"field {field} decodes as uuid"
    # UUIDv7: the top 48 bits are the Unix milliseconds of creation.
    id_ms = uuid.UUID(msg_id).int >> 80
    assert before * 1000 - CLOCK_SLACK_S * 1000 <= id_ms <= after * 1000 + CLOCK_SLACK_S * 1000


def test_uppercase_and_msgpack_uuid_arguments_are_the_same_ids(conn):
    dialog, alice, bob = new_user(), new_user(), new_user()
    new_dialog(conn, str(dialog).upper(), str(alice).upper(), str(bob), "upper")
    # The connector sends uuid.UUID as a msgpack uuid (extension type 2).
    new_dialog(conn, dialog, alice, bob, "ext")
    rows = get_dialog(conn, dialog)
    assert [r[TEXT] for r in rows] == ["upper", "ext"]
    assert {r[USER_FROM] for r in rows} == {alice}
    assert {r[USER_TO] for r in rows} == {bob}


def test_readme_examples_literally(conn):
    """README's Python example against this server's reply shape ("Reply shape"):
    `...data[0]` is the id where results go one value each (3.x), the one-element
    list `[id]` where they are wrapped (2.x); `...data[0]` is the list of messages
    on every server."""
    a, b = new_user(), new_user()
    first = conn.call("new_dialog", (None, str(a), str(b), "hi Bob")).data[0]
    if results_one_value_each(server_key(conn)):
        msg_id = first
    else:
        [msg_id] = first
    assert isinstance(msg_id, str) and str(uuid.UUID(msg_id)) == msg_id, first
    messages = conn.call("get_dialog", (str(derived_dialog_id(a, b)),)).data[0]
    assert [(str(t[ID]), t[TEXT]) for t in messages] == [(msg_id, "hi Bob")]
    newest = conn.call("get_dialog", (str(derived_dialog_id(a, b)),
                                      {"limit": 50, "reverse": True})).data[0]
    assert [str(t[ID]) for t in newest] == [msg_id]


def test_the_store_leaves_the_reply_shape_option_as_the_server_has_it(make_server):
    """The compat option c_func_iproto_multireturn is process-wide: the running store
    has it exactly as a fresh instance of the same binary, which is also what the
    reply-shape checks of every other test assume (dialogs_api)."""
    default = multireturn_of_binary()
    if default == "absent":
        pytest.skip("this server has no compat option c_func_iproto_multireturn "
                    "(C function results are always wrapped in one array)")
    srv, admin = start_admin_server(make_server, "compat")
    try:
        assert admin.eval(MULTIRETURN_PROBE_LUA) == default
        conn = srv.connect()
        a, b = new_user(), new_user()
        data = conn.call("new_dialog", (None, str(a), str(b), "shape")).data
        msg_id = message_id_of(server_key(conn), data)
        assert data == ([msg_id] if default == "new" else [[msg_id]])
    finally:
        remove_socket_dir(srv)


@pytest.mark.skipif(not HAS_DATETIME, reason="server has no datetime type (2.6)")
def test_created_at_is_a_datetime_near_now(conn):
    dialog = new_user()
    new_dialog(conn, dialog, new_user(), new_user(), "when")
    created = get_dialog(conn, dialog)[0][CREATED_AT]
    assert isinstance(created, tarantool.Datetime), repr(created)
    assert abs(created.timestamp - time.time()) < CLOCK_SLACK_S


@pytest.mark.skipif(HAS_DATETIME, reason="server has the datetime type (2.10+): "
                                         "created_at is a datetime there")
def test_created_at_is_unix_microseconds_without_datetime(conn):
    dialog = new_user()
    new_dialog(conn, dialog, new_user(), new_user(), "when")
    created = get_dialog(conn, dialog)[0][CREATED_AT]
    assert isinstance(created, int), repr(created)
    assert abs(created / 1e6 - time.time()) < CLOCK_SLACK_S


def test_both_directions_of_a_pair_share_the_derived_dialog(conn):
    alice, bob = new_user(), new_user()
    m1 = new_dialog(conn, None, str(alice), str(bob), "hi Bob")
    m2 = new_dialog(conn, None, str(bob), str(alice), "hi Alice")
    m3 = new_dialog(conn, None, bob, alice, "as msgpack uuids")

    dialog = derived_dialog_id(alice, bob)
    rows = get_dialog(conn, dialog)
    assert [str(r[ID]) for r in rows] == [m1, m2, m3]
    assert {r[DIALOG_ID] for r in rows} == {dialog}
    assert [(r[USER_FROM], r[USER_TO]) for r in rows] == [(alice, bob), (bob, alice),
                                                          (bob, alice)]
    # Another pair is another dialog.
    carol = new_user()
    new_dialog(conn, None, alice, carol, "hi Carol")
    assert len(get_dialog(conn, dialog)) == 3
    assert len(get_dialog(conn, derived_dialog_id(carol, alice))) == 1


def test_note_to_self_has_a_dialog_too(conn):
    alice = new_user()
    new_dialog(conn, None, alice, alice, "remember the milk")
    rows = get_dialog(conn, derived_dialog_id(alice, alice))
    assert [r[TEXT] for r in rows] == ["remember the milk"]


def test_unknown_dialog_is_an_empty_array(conn):
    assert get_dialog(conn, new_user()) == []
    assert get_dialog(conn, new_user(), {"reverse": True, "limit": 5}) == []


def test_text_limits_count_characters_not_bytes(conn):
    dialog = new_user()
    longest = "ж" * 4096  # 8192 bytes, 4096 characters
    widest = "🙂" * 4096  # 16384 bytes, 4096 characters
    for text in (longest, widest, "🙂", "x"):
        new_dialog(conn, dialog, new_user(), new_user(), text)
    assert [r[TEXT] for r in get_dialog(conn, dialog)] == [longest, widest, "🙂", "x"]


def test_fifty_threads_with_a_connection_each(shared_server):
    """The seed's load test failed at 50 threads; here every call must succeed."""
    threads, per_thread = 50, 20
    alice, bob = new_user(), new_user()
    results, errors = {}, []

    def worker(n):
        try:
            c = shared_server.connect()
            results[n] = [new_dialog(c, None, alice, bob, f"t{n} m{i}")
                          for i in range(per_thread)]
            c.close()
        except Exception as e:  # reported below, with the thread it happened in
            errors.append((n, repr(e)))

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not any(t.is_alive() for t in pool), "a worker hung"
    assert errors == []
    # Each thread saw its own ids increase; all ids are distinct and all stored.
    assert all(ids == sorted(ids, key=uuid.UUID) for ids in results.values())
    every = [i for ids in results.values() for i in ids]
    assert len(set(every)) == threads * per_thread
    stored = [r for p in walk_dialog(shared_server.connect(), derived_dialog_id(alice, bob),
                                     MAX_PAGE) for r in p]
    assert sorted(str(r[ID]) for r in stored) == sorted(every)
    assert [r[ID] for r in stored] == sorted(r[ID] for r in stored)


@pytest.fixture(scope="module")
def dialog_of_25(shared_server):
    """A dialog of 25 messages, with their ids in the order they were sent."""
    c = shared_server.connect()
    dialog, a, b = new_user(), new_user(), new_user()
    ids = []
    for i in range(25):
        if i == 12:
            # Ids made within one millisecond may be consecutive integers; a new
            # millisecond guarantees room for a cursor strictly between ids 11 and 12.
            time.sleep(0.002)
        ids.append(uuid.UUID(new_dialog(c, dialog, a, b, f"m{i}")))
    c.close()
    return dialog, ids


def page_ids(conn, dialog, opts=None):
    return [r[ID] for r in get_dialog(conn, dialog, opts)]


def test_messages_come_oldest_first_with_increasing_ids(conn, dialog_of_25):
    dialog, ids = dialog_of_25
    assert ids == sorted(ids) and len(set(ids)) == 25
    rows = get_dialog(conn, dialog)
    assert [r[ID] for r in rows] == ids
    assert [r[TEXT] for r in rows] == [f"m{i}" for i in range(25)]


def test_limit_after_before_reverse(conn, dialog_of_25):
    dialog, ids = dialog_of_25
    s = str
    assert page_ids(conn, dialog, {"limit": 10}) == ids[:10]
    assert page_ids(conn, dialog, {"limit": 1}) == ids[:1]
    assert page_ids(conn, dialog, {"after": s(ids[9]), "limit": 10}) == ids[10:20]
    assert page_ids(conn, dialog, {"after": s(ids[19]), "limit": 10}) == ids[20:]
    assert page_ids(conn, dialog, {"after": s(ids[24])}) == []
    assert page_ids(conn, dialog, {"before": s(ids[5])}) == ids[:5]
    assert page_ids(conn, dialog, {"before": s(ids[0])}) == []
    assert page_ids(conn, dialog, {"after": s(ids[3]), "before": s(ids[8])}) == ids[4:8]
    # Newest first: a chat window, then older pages.
    assert page_ids(conn, dialog, {"reverse": True, "limit": 10}) == ids[::-1][:10]
    assert page_ids(conn, dialog, {"reverse": True, "before": s(ids[15]), "limit": 10}) \
        == ids[14::-1][:10]
    assert page_ids(conn, dialog, {"reverse": True, "after": s(ids[20])}) == ids[:20:-1]
    assert page_ids(conn, dialog, {"reverse": False}) == ids
    # Cursors as msgpack uuids work like strings.
    assert page_ids(conn, dialog, {"after": ids[9], "limit": 3}) == ids[10:13]


def test_any_uuid_is_a_cursor(conn, dialog_of_25):
    dialog, ids = dialog_of_25
    # A position strictly between two stored ids, not itself a message.
    between = uuid.UUID(int=ids[11].int + 1)
    assert between not in ids and ids[11] < between < ids[12]
    assert page_ids(conn, dialog, {"after": str(between), "limit": 3}) == ids[12:15]
    assert page_ids(conn, dialog, {"before": str(between), "limit": 3, "reverse": True}) \
        == ids[11:8:-1]
    # Far below and far above every id.
    low, high = uuid.UUID(int=1), uuid.UUID(int=(1 << 128) - 1)
    assert page_ids(conn, dialog, {"after": str(low)}) == ids
    assert page_ids(conn, dialog, {"before": str(high), "reverse": True}) == ids[::-1]


def test_a_long_dialog_reads_page_by_page_without_gap_or_duplicate(conn):
    dialog, alice, bob = new_user(), new_user(), new_user()
    count = 3000
    sent = [uuid.UUID(new_dialog(conn, dialog, *((alice, bob) if i % 2 else (bob, alice)),
                                 f"message {i}")) for i in range(count)]
    assert sent == sorted(sent)

    # No call returns more than a page of 1000, even without a limit.
    assert [r[ID] for r in get_dialog(conn, dialog)] == sent[:MAX_PAGE]

    for page in (MAX_PAGE, 97):
        pages = list(walk_dialog(conn, dialog, page))
        got = [r[ID] for p in pages for r in p]
        assert got == sent, f"oldest-first walk with pages of {page}"
        texts = [r[TEXT] for p in pages for r in p]
        assert texts == [f"message {i}" for i in range(count)]

    pages = list(walk_dialog(conn, dialog, 250, newest_first=True))
    assert [r[ID] for p in pages for r in p] == sent[::-1]
    assert all(len(p) == 250 for p in pages)
