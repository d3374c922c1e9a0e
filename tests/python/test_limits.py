"""The store at the edge of its memory: Tarantool's own errors pass through."""

import uuid

import pytest
import tarantool

from dialogs_api import ID, get_dialog, new_dialog, new_user

MIB = 1024 * 1024
SMALLEST_ARENA = 32 * MIB  # init.lua's minimum DIALOGS_MEMTX_MEMORY
ER_MEMORY_ISSUE = 2  # Tarantool's "Failed to allocate ..."
BIG_TEXT = "🙂" * 4096  # 16 KB of text, the longest a message may be


def test_out_of_memory_is_tarantools_error_and_the_server_goes_on(make_server):
    srv = make_server(memtx_memory=SMALLEST_ARENA)
    conn = srv.connect()
    dialog, a, b = new_user(), new_user(), new_user()
    stored = []
    # Far more than fits: 32 MiB / 16 KB is about 2000 messages.
    for _ in range(4 * SMALLEST_ARENA // len(BIG_TEXT.encode())):
        try:
            stored.append(uuid.UUID(new_dialog(conn, dialog, a, b, BIG_TEXT)))
        except tarantool.error.DatabaseError as e:
            assert not isinstance(e, tarantool.error.NetworkError), repr(e)
            error = e
            break
    else:
        pytest.fail("the arena never filled up")
    assert error.code == ER_MEMORY_ISSUE, (error.code, error.message)
    assert "allocate" in error.message.lower(), error.message
    assert len(stored) > 100

    # Still serving: reads work and show exactly the acknowledged messages.
    assert srv.is_running()
    got = []
    after = None
    while True:
        page = get_dialog(conn, dialog, {"limit": 1000, **({"after": after} if after else {})})
        got += [r[ID] for r in page]
        if len(page) < 1000:
            break
        after = str(page[-1][ID])
    assert got == stored
    # The refusal is stable (the same error, not a crash) and, with a request_id,
    # leaves no half of the write behind: no retry record for that id on disk.
    rid = str(uuid.uuid4())
    with pytest.raises(tarantool.error.DatabaseError) as info:
        new_dialog(conn, dialog, a, b, BIG_TEXT, {"request_id": rid})
    assert info.value.code == ER_MEMORY_ISSUE
    assert srv.is_running()
    srv.stop()
    assert not [r for r in srv.wal_records() if rid in str(r["body"])]
