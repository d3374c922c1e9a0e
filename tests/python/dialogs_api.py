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


# Over IPROTO_CALL, Tarantool before 3.0 sends all the results of a C function as
# one array (tarantool/tarantool#4799; 2.11 keeps that unless its compat option
# c_func_iproto_multireturn is 'new', 3.0 does not wrap by default). So a procedure
# that returns one value v arrives as [[v]] on 2.6 and as [v] on 3.x. That is the
# platform's doing; what the tests demand is exactly one of the two shapes, the same
# for every reply of one server. Server address -> True when it wraps.
_REPLY_WRAPPED: dict = {}


def is_message_id(v) -> bool:
    return isinstance(v, str)


def is_message_list(v) -> bool:
    """An array of message tuples: 6 fields each, the first a decoded uuid."""
    return isinstance(v, (list, tuple)) and all(
        isinstance(t, (list, tuple)) and len(t) == 6 and isinstance(t[0], uuid.UUID)
        for t in v)


def single_result(server_key, data, is_value, what: str):
    """The one value a procedure returned, from a reply's data (see _REPLY_WRAPPED)."""
    data = list(data)
    assert len(data) == 1, f"{what}: expected one result, got {data!r}"
    v = data[0]
    plain = is_value(v)
    wrapped = isinstance(v, (list, tuple)) and len(v) == 1 and is_value(v[0])
    assert plain != wrapped, f"{what}: not {'one' if not plain else 'an unambiguous'} " \
                             f"result: {data!r}"
    seen = _REPLY_WRAPPED.setdefault(server_key, wrapped)
    assert seen == wrapped, f"{what}: reply shape changed on one server: {data!r}"
    return v[0] if wrapped else v


def replies_wrapped(server_key) -> Optional[bool]:
    """Whether this server's replies came wrapped (None: no reply seen yet)."""
    return _REPLY_WRAPPED.get(server_key)


def server_key(conn):
    return (conn.host, conn.port)


def new_dialog(conn, dialog_id, user_from, user_to, text, opts=None) -> str:
    """Call new_dialog; uuid.UUID arguments go as msgpack uuids, str as strings."""
    args = [dialog_id, user_from, user_to, text]
    if opts is not None:
        args.append(opts)
    resp = conn.call("new_dialog", args)
    return single_result(server_key(conn), resp.data, is_message_id, "new_dialog")


def get_dialog(conn, dialog_id, opts: Optional[dict] = None) -> list:
    """Call get_dialog and return its one array of message tuples."""
    args = [str(dialog_id) if isinstance(dialog_id, uuid.UUID) else dialog_id]
    if opts is not None:
        args.append(opts)
    resp = conn.call("get_dialog", args)
    return single_result(server_key(conn), resp.data, is_message_list, "get_dialog")


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
