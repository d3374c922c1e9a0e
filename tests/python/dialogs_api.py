"""What a client of dialogs writes: the calls, the derived dialog id, the error codes.

Kept apart from the tests so crash, access and replication tests call the store the
same way. Everything here follows README.md ("API", "Errors").
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from typing import Iterator, Optional

import pytest
import tarantool

# README "Derived dialog ids".
DIALOG_NAMESPACE = uuid.UUID("891430a2-525c-5f8d-a17c-599239615dc5")
MAX_PAGE = 1000
MAX_TEXT_CHARS = 4096

# README "Errors".
BAD_ARITY = 1001
BAD_TYPE = 1002
BAD_UUID = 1003
BAD_TEXT = 1004
BAD_OPTION = 1005
READ_ONLY = 1006
REQUEST_CONFLICT = 1007
INTERNAL = 1008

# Field numbers of a message tuple.
ID, DIALOG_ID, USER_FROM, USER_TO, TEXT, CREATED_AT = range(6)


def derived_dialog_id(a: uuid.UUID, b: uuid.UUID) -> uuid.UUID:
    """The dialog of the unordered pair {a, b}: UUIDv5(NS, lo || hi) over raw bytes."""
    lo, hi = sorted([a.bytes, b.bytes])
    digest = hashlib.sha1(DIALOG_NAMESPACE.bytes + lo + hi).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def new_user() -> uuid.UUID:
    return uuid.uuid4()


# What a procedure's reply looks like on the wire (README "Reply shape"): a C
# procedure's results are a list of return values (new_dialog: the id; get_dialog:
# one per message tuple), and the server sends that list as one array:
#
#   new_dialog  data  =  [[id]]
#   get_dialog  data  =  [[t1, t2, ...]]
#
# Tarantool 2.x always does; 3.x does so because init.lua keeps its compat option
# c_func_iproto_multireturn at 'old'. Any other shape fails the test.


def is_message_id(v) -> bool:
    return isinstance(v, str)


def is_message_tuple(v) -> bool:
    """A message tuple: 6 fields, the first a decoded uuid."""
    return isinstance(v, (list, tuple)) and len(v) == 6 and isinstance(v[0], uuid.UUID)


def call_results(server_key, data, is_result, what: str) -> list:
    """A procedure's return values, from a reply's data (the one array above)."""
    data = list(data)
    assert (len(data) == 1 and isinstance(data[0], (list, tuple))
            and all(is_result(x) for x in data[0])), \
        f"{what}: expected one array of results, got {data!r}"
    return list(data[0])


def server_key(conn):
    return (conn.host, conn.port)


def message_id_of(server_key, data) -> str:
    """new_dialog's reply: exactly one result, the id string."""
    results = call_results(server_key, data, is_message_id, "new_dialog")
    assert len(results) == 1, f"new_dialog: expected one result, got {results!r}"
    return results[0]


def messages_of(server_key, data) -> list:
    """get_dialog's reply: the message tuples, oldest first unless reversed."""
    return call_results(server_key, data, is_message_tuple, "get_dialog")


def new_dialog(conn, dialog_id, user_from, user_to, text, opts=None) -> str:
    """Call new_dialog; uuid.UUID arguments go as msgpack uuids, str as strings."""
    args = [dialog_id, user_from, user_to, text]
    if opts is not None:
        args.append(opts)
    return message_id_of(server_key(conn), conn.call("new_dialog", args).data)


def get_dialog(conn, dialog_id, opts: Optional[dict] = None) -> list:
    """Call get_dialog and return its message tuples."""
    args = [str(dialog_id) if isinstance(dialog_id, uuid.UUID) else dialog_id]
    if opts is not None:
        args.append(opts)
    return messages_of(server_key(conn), conn.call("get_dialog", args).data)


def walk_dialog(conn, dialog_id, page: int, *, newest_first: bool = False) -> Iterator[list]:
    """Every page of a dialog as a client reads it with cursors (README "get_dialog")."""
    opts: dict = {"limit": page}
    if newest_first:
        opts["reverse"] = True
    while True:
        rows = get_dialog(conn, dialog_id, dict(opts))
        assert len(rows) <= page
        if rows:
            yield rows
        if len(rows) < page:
            return
        opts["before" if newest_first else "after"] = str(rows[-1][ID])


def expect_error(fn, code: int, message: Optional[str] = None,
                 pattern: Optional[str] = None) -> tarantool.error.DatabaseError:
    """Run fn; it must fail with a Tarantool error reply of ``code`` whose message is
    ``message`` exactly, or matches the regular expression ``pattern``."""
    with pytest.raises(tarantool.error.DatabaseError) as info:
        fn()
    err = info.value
    assert not isinstance(err, tarantool.error.NetworkError), f"not a server reply: {err!r}"
    assert err.code == code, f"expected code {code}, got {err.code}: {err.message}"
    if message is not None:
        assert err.message == message
    if pattern is not None:
        assert re.search(pattern, err.message), f"{err.message!r} !~ {pattern!r}"
    return err


def tarantool_supports_datetime(binary: str = "tarantool") -> bool:
    """Whether the Tarantool the harness runs has the datetime module (2.10+).

    Asked of the binary itself, not inferred from its version string."""
    probe = "os.exit(pcall(require, 'datetime') and 0 or 3)"
    rc = subprocess.run([binary, "-e", probe], capture_output=True, timeout=30).returncode
    assert rc in (0, 3), f"capability probe failed to run ({rc})"
    return rc == 0
