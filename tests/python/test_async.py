"""Many calls in flight on one connection, with the asyncio connector `asynctnt`."""

import asyncio
import uuid

import asynctnt

from dialogs_api import (ID, TEXT, derived_dialog_id, message_id_of, messages_of,
                         walk_dialog)

IN_FLIGHT = 2000


async def send_all(server, alice, bob):
    conn = asynctnt.Connection(host=server.host, port=server.port, username=server.user,
                               password=server.password, connect_timeout=5,
                               request_timeout=60, reconnect_timeout=0)
    await conn.connect()
    try:
        calls = [conn.call("new_dialog", [None, str(alice), str(bob), f"async {i}"])
                 for i in range(IN_FLIGHT)]
        replies = await asyncio.gather(*calls)
        # A read in the same pipeline as the writes sees all of them.
        newest = await conn.call("get_dialog", [str(derived_dialog_id(alice, bob)),
                                               {"reverse": True, "limit": 1}])
    finally:
        await conn.disconnect()
    key = (server.host, server.port)
    return [message_id_of(key, r) for r in replies], messages_of(key, newest)


def test_two_thousand_concurrent_calls_on_one_connection(shared_server):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    ids, newest = asyncio.run(asyncio.wait_for(send_all(shared_server, alice, bob), 90))

    assert len(ids) == IN_FLIGHT
    assert all(isinstance(i, str) for i in ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert len(set(parsed)) == IN_FLIGHT, "duplicate message ids"
    # Requests on one connection are started in the order sent, so ids follow it.
    assert parsed == sorted(parsed), "ids not increasing in request order"
    assert len(newest) == 1 and str(newest[0][ID]) == ids[-1]

    stored = [r for page in walk_dialog(shared_server.connect(),
                                        derived_dialog_id(alice, bob), 1000) for r in page]
    assert [str(r[ID]) for r in stored] == ids
    assert [r[TEXT] for r in stored] == [f"async {i}" for i in range(IN_FLIGHT)]
    assert shared_server.is_running()
