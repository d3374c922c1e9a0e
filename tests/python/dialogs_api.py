"""What a client of dialogs writes: the calls, the derived dialog id, the error codes.

Kept apart from the tests so crash, access and replication tests call the store the
same way. Everything here follows README.md ("API", "Errors").
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import uuid
from typing import Iterator, Optional

import msgpack
import pytest
import tarantool

# README "Derived dialog ids" and "Dialog keys".
DIALOG_NAMESPACE = uuid.UUID("891430a2-525c-5f8d-a17c-599239615dc5")
KEY_NAMESPACE = uuid.UUID("2450fed4-12b1-4494-82cd-87a7412d823d")
MAX_KEY_BYTES = 255
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

# Tarantool's own errors that reach a caller (README "Errors", second table).
ER_MEMORY_ISSUE = 2
ER_INVALID_MSGPACK = 20
ER_ACCESS_DENIED = 42
ER_NO_SUCH_USER = 45
ER_PASSWORD_MISMATCH = ER_CREDS_MISMATCH = 47  # one code, renamed when it widened
INVALID_MSGPACK_BODY = "Invalid MsgPack - packet body"

# Field numbers of a message tuple.
ID, DIALOG_ID, USER_FROM, USER_TO, TEXT, CREATED_AT = range(6)


def derived_dialog_id(a: uuid.UUID, b: uuid.UUID) -> uuid.UUID:
    """The dialog of the unordered pair {a, b}: UUIDv5(NS, lo || hi) over raw bytes."""
    lo, hi = sorted([a.bytes, b.bytes])
    digest = hashlib.sha1(DIALOG_NAMESPACE.bytes + lo + hi).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def key_dialog_id(key: str) -> uuid.UUID:
    """The dialog a string key names: UUIDv5(KEY_NAMESPACE, the key's UTF-8 bytes)."""
    digest = hashlib.sha1(KEY_NAMESPACE.bytes + key.encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def report_key(a: uuid.UUID, b: uuid.UUID) -> str:
    """The report's service's dialog key for users a and b: their canonical strings
    concatenated, the one whose unsigned 32-bit murmur3 hash (seed 0) is smaller
    first."""
    first, second = sorted([str(a), str(b)], key=lambda s: murmur3_32(s.encode()))
    return first + second


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned (what the report's service orders by)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    k = int.from_bytes(data[whole:], "little")
    if len(data) & 3:
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def new_user() -> uuid.UUID:
    return uuid.uuid4()


# Whether the server checks the msgpack extensions of every request before any
# procedure runs (README "Errors": 20 for a malformed uuid, decimal, datetime, error,
# interval or tuple extension). Tarantool began to do so in 2.10.1 (gh-6857) and
# offers no option or flag that says it does, so the probe asks for what arrived
# with it in the same release: the module API function box_tuple_field_by_path
# (gh-7228), exported by every server from 2.10.1 on and by none before. Sending a
# malformed extension to see what comes back would probe the very behaviour the
# tests check, and could not tell a server that checks from a procedure that
# happens to refuse it.
CHECKS_EXTENSIONS_PROBE_LUA = (
    "(function() local ffi = require('ffi') "
    "pcall(ffi.cdef, 'void *dlsym(void *handle, const char *symbol);') "
    "return ffi.C.dlsym(nil, 'box_tuple_field_by_path') ~= nil end)()")
# Whether a failed login says which part was wrong (45 for an unknown user, 47 for
# a wrong password) or, where box.error.CREDS_MISMATCH exists, only that the
# credentials are invalid (47, for both).
CREDS_MISMATCH_PROBE_LUA = "box.error.CREDS_MISMATCH ~= nil"

_BINARY_PROBES: dict = {}


def probe_binary(lua_expr: str, binary: Optional[str] = None) -> str:
    """tostring() of a Lua expression evaluated by a fresh `binary` (default: the
    `tarantool` on PATH, the server under test), without box.cfg."""
    binary = os.path.realpath(binary or shutil.which("tarantool") or "tarantool")
    key = (binary, lua_expr)
    if key not in _BINARY_PROBES:
        out = subprocess.run([binary, "-e", f"print(tostring({lua_expr})) os.exit(0)"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.strip(), \
            f"probe {lua_expr!r} of {binary} failed: {out.returncode} {out.stdout!r} " \
            f"{out.stderr!r}"
        _BINARY_PROBES[key] = out.stdout.strip()
    return _BINARY_PROBES[key]


def checks_request_extensions(binary: Optional[str] = None) -> bool:
    """See CHECKS_EXTENSIONS_PROBE_LUA."""
    return probe_binary(CHECKS_EXTENSIONS_PROBE_LUA, binary) == "true"


def has_creds_mismatch(binary: Optional[str] = None) -> bool:
    """See CREDS_MISMATCH_PROBE_LUA."""
    return probe_binary(CREDS_MISMATCH_PROBE_LUA, binary) == "true"


# What a procedure's reply looks like on the wire (README "Reply shape"), exactly,
# for the server at hand:
#
#   how the server sends a C function's results          new_dialog   get_dialog
#   in one array (2.x: no compat option                  [[id]]       [[t1, t2, ...]]
#     c_func_iproto_multireturn)
#   one value each (3.x: the option, at its default      [id]         [[t1, t2, ...]]
#     'new')
#
# get_dialog returns one value, the list of messages, where results go one value
# each, and one value per message where they are wrapped: `data[0]` is the list
# either way. Which behaviour applies is asked of the server (the option exists,
# and its value), never read from a version string. Any other shape fails.

# A Lua expression: 'absent' (no such compat option: results are always wrapped),
# else the option's state, 'new' (one value each) or 'old' (wrapped).
MULTIRETURN_PROBE_LUA = (
    "(function() "
    "local ok, compat = pcall(require, 'compat') "
    "if not ok then return 'absent' end "
    "local has, opt = pcall(function() return compat.c_func_iproto_multireturn end) "
    "if not has then return 'absent' end "
    "return opt:is_new() and 'new' or 'old' end)()")

# server key (host, port) -> the option's state on that server, for a test that
# changes the option there (`set_multireturn`). Every other server has its binary's
# default: the harness tells which binary a server runs (`set_server_binary_lookup`).
_MULTIRETURN: dict = {}
_server_binary = [lambda server_key: None]


def set_server_binary_lookup(lookup) -> None:
    """`lookup(server_key)` -> the Tarantool binary that server runs, or None (the
    suite's own)."""
    _server_binary[0] = lookup


def multireturn_of_binary(binary: Optional[str] = None) -> str:
    """The option's state in a fresh instance of `binary` (default: the `tarantool`
    on PATH, the server under test): 'absent', 'new' or 'old'. A server runs with it
    as long as nobody sets the option, and the store does not (test_api checks that
    on a running server)."""
    state = probe_binary(MULTIRETURN_PROBE_LUA, binary)
    assert state in ("absent", "new", "old"), f"reply-shape probe: {state!r}"
    return state


def set_multireturn(server_key, state: str) -> None:
    """Record the option's state on one server."""
    assert state in ("absent", "new", "old"), state
    _MULTIRETURN[server_key] = state


def results_one_value_each(server_key) -> bool:
    """True where the server sends a C function's results one value each."""
    state = _MULTIRETURN.get(server_key) or multireturn_of_binary(_server_binary[0](server_key))
    return state == "new"


def is_message_id(v) -> bool:
    return isinstance(v, str)


def is_message_tuple(v) -> bool:
    """A message tuple: 6 fields, the first a uuid (decoded by a connector, or a
    msgpack uuid extension as a bare socket reads it)."""
    return isinstance(v, (list, tuple)) and len(v) == 6 and (
        isinstance(v[0], uuid.UUID)
        or (isinstance(v[0], msgpack.ExtType) and v[0].code == 2 and len(v[0].data) == 16))


def server_key(conn):
    return (conn.host, conn.port)


def message_id_of(server_key, data) -> str:
    """new_dialog's reply: the id string, in exactly the server's shape."""
    data = list(data)
    if results_one_value_each(server_key):
        assert len(data) == 1 and is_message_id(data[0]), \
            f"new_dialog: expected [id] (results one value each), got {data!r}"
        return data[0]
    assert (len(data) == 1 and isinstance(data[0], (list, tuple)) and len(data[0]) == 1
            and is_message_id(data[0][0])), \
        f"new_dialog: expected [[id]] (results wrapped in one array), got {data!r}"
    return data[0][0]


def messages_of(server_key, data) -> list:
    """get_dialog's reply, [[t1, t2, ...]] on every server: the message tuples,
    oldest first unless reversed."""
    data = list(data)
    assert (len(data) == 1 and isinstance(data[0], (list, tuple))
            and all(is_message_tuple(x) for x in data[0])), \
        f"get_dialog: expected [[t1, t2, ...]], got {data!r}"
    return list(data[0])


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
