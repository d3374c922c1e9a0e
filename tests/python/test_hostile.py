"""Hostile arguments, table-driven (issue 4, point 1).

Every case goes over a bare IPROTO socket (the exact msgpack bytes, the exact error
code) to one server with an admin console, and asserts three things: the reply is
the documented one (README "Errors": code and the full message), neither space
changed (counted by admin, not inferred from a read), and the next valid call on the
same connection stores exactly one message.

The tables: every arity 0..=6 of the message procedures, and of the inbox's
(list_dialogs, mark_read: a table of their own); every msgpack type in every
argument position; uuid spellings; text lengths counted in characters, multi-byte
text and invalid UTF-8; option maps (unknown, mistyped, repeated, non-string keys);
limits; and cursors, which are positions, not lookups.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import msgpack
import pytest

from admin import AdminConsole, admin_kwargs, admin_socket, remove_socket_dir
from dialogs_api import (BAD_ARITY, BAD_OPTION, BAD_TEXT, BAD_TYPE, BAD_UUID,
                         ER_INVALID_MSGPACK, INVALID_MSGPACK_BODY, REQUEST_CONFLICT,
                         checks_request_extensions, message_id_of, messages_of,
                         results_one_value_each, server_key)
from harness import Server
from iproto_raw import RawConnection

# Whether the server refuses a malformed msgpack extension itself, before the
# procedure sees the call (README "Errors": 20 on servers that check extensions in
# requests; the procedure's own 1002 on the others). Probed: see dialogs_api.
CHECKS_EXTENSIONS = checks_request_extensions()

NEW_SIG = "new_dialog: expected 4 or 5 arguments (dialog_id, user_from, user_to, text [, opts])"
GET_SIG = "get_dialog: expected 1 or 2 arguments (dialog_id [, opts])"
EXPECTED_UUID = "expected a uuid (string or msgpack uuid)"
EXPECTED_DIALOG = "expected a uuid (string or msgpack uuid) or a dialog key (string)"


@dataclass(frozen=True)
class Raw:
    """An argument given as its msgpack encoding, byte for byte."""
    encoded: bytes


def encode(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.encoded
    if isinstance(value, list):
        return array_header(len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, dict):
        assert len(value) < 16
        return bytes([0x80 | len(value)]) + b"".join(
            encode(k) + encode(v) for k, v in value.items())
    return msgpack.packb(value, use_bin_type=True)


def array_header(n: int) -> bytes:
    return bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)


def raw_map(*pairs) -> Raw:
    """A map whose pairs may repeat a key: what a dict cannot hold."""
    return Raw(bytes([0x80 | len(pairs)]) + b"".join(encode(k) + encode(v) for k, v in pairs))


def raw_str(payload: bytes) -> Raw:
    """A msgpack str with any payload bytes, UTF-8 or not."""
    n = len(payload)
    if n < 32:
        head = bytes([0xa0 | n])
    elif n < 256:
        head = b"\xd9" + bytes([n])
    elif n < 65536:
        head = b"\xda" + struct.pack(">H", n)
    else:
        head = b"\xdb" + struct.pack(">I", n)
    return Raw(head + payload)


def mp_uuid(u: uuid.UUID) -> msgpack.ExtType:
    return msgpack.ExtType(2, u.bytes)


# Fixed ids: the tables are built at import time and must not depend on the run.
DIALOG = uuid.UUID("0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01")
ALICE = uuid.UUID("5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02")
BOB = uuid.UUID("9a1e44c2-77d0-4c5b-a1f3-0c2d5e6f7a03")
NIL_UUID = "00000000-0000-0000-0000-000000000000"
VALID_NEW = [str(DIALOG), str(ALICE), str(BOB), "hello"]

# One value of every msgpack type, as (case id, value, the type name the error
# messages use). Strings are not here: in a uuid position a string is parsed (see
# UUID_STRINGS), in the text position it is the expected type.
TYPES = [
    ("nil", None, "nil"),
    ("true", True, "boolean"),
    ("false", False, "boolean"),
    ("zero", 0, "integer"),
    ("positive-int", 42, "integer"),
    ("negative-int", -1, "integer"),
    ("min-int64", -2**63, "integer"),
    ("max-uint64", 2**64 - 1, "integer"),
    ("float64", 1.5, "float"),
    ("float32", Raw(b"\xca" + struct.pack(">f", 1.5)), "float"),
    ("nan", float("nan"), "float"),
    ("bin", b"\x01\x02\x03", "binary"),
    ("empty-bin", b"", "binary"),
    ("bin-uuid-bytes", ALICE.bytes, "binary"),
    ("array", [1, 2], "array"),
    ("nested-array", [[str(ALICE)]], "array"),
    ("empty-map", {}, "map"),
    ("map", {"a": 1}, "map"),
    ("ext-decimal", msgpack.ExtType(1, b"\x00\x1c"), "decimal"),
    ("ext-datetime", msgpack.ExtType(4, struct.pack("<q", 1_700_000_000)), "datetime"),
    ("ext-error", msgpack.ExtType(3, b"\x80"), "error"),
    ("ext-5", msgpack.ExtType(5, b"xyz"), "extension"),
    # fixext4 of type -1 (msgpack timestamp): written by hand, msgpack.ExtType refuses < 0.
    ("ext-timestamp", Raw(b"\xd6\xff" + struct.pack(">I", 1_700_000_000)), "extension"),
    ("ext-127", msgpack.ExtType(127, b""), "extension"),
]
# The empty array counts as "no options" (Lua sends {} as an empty array).
EMPTY_ARRAY = ("empty-array", [], "array")


@dataclass
class Case:
    proc: str
    args: list
    code: int  # 0: the call succeeds
    message: Optional[str] = None  # the exact message of a refusal
    stores: int = 0  # messages a successful call stores


def refused(proc, args, code, message) -> Case:
    return Case(proc, args, code, message)


def accepted(proc, args, stores) -> Case:
    return Case(proc, args, 0, None, stores)


def with_arg(base: list, i: int, value) -> list:
    out = list(base)
    out[i] = value
    return out


# --- 1. arity: 0..=6 arguments ---------------------------------------------------------

ARITY = {}
_new_full = VALID_NEW + [None, "extra"]
for n in range(7):
    ARITY[f"new_dialog-{n}-args"] = (
        accepted("new_dialog", _new_full[:n], 1) if n in (4, 5)
        else refused("new_dialog", _new_full[:n], BAD_ARITY, f"{NEW_SIG}, got {n}"))
_get_full = [str(DIALOG), {"limit": 1}, None, "x", 1, 2]
for n in range(7):
    ARITY[f"get_dialog-{n}-args"] = (
        accepted("get_dialog", _get_full[:n], 0) if n in (1, 2)
        else refused("get_dialog", _get_full[:n], BAD_ARITY, f"{GET_SIG}, got {n}"))
# Far too many arguments: counted, not read.
ARITY["new_dialog-100-args"] = refused("new_dialog", ["x"] * 100, BAD_ARITY,
                                       f"{NEW_SIG}, got 100")
ARITY["get_dialog-100-args"] = refused("get_dialog", [None] * 100, BAD_ARITY,
                                       f"{GET_SIG}, got 100")

# --- 2. every msgpack type in every position -------------------------------------------

def expected_of(arg: str) -> str:
    """What a refusal of a wrong type says the argument takes."""
    return EXPECTED_DIALOG if arg == "dialog_id" else EXPECTED_UUID


TYPE_MATRIX = {}
NEW_POSITIONS = [(0, "dialog_id"), (1, "user_from"), (2, "user_to")]
for pos, arg in NEW_POSITIONS:
    for tid, value, tname in TYPES:
        key = f"new_dialog-{arg}-{tid}"
        if pos == 0 and value is None:
            # nil dialog_id: derived from the user pair (README).
            TYPE_MATRIX[key] = accepted("new_dialog", with_arg(VALID_NEW, pos, value), 1)
        else:
            TYPE_MATRIX[key] = refused("new_dialog", with_arg(VALID_NEW, pos, value), BAD_TYPE,
                                       f"{arg}: {expected_of(arg)}, got {tname}")
    TYPE_MATRIX[f"new_dialog-{arg}-empty-array"] = refused(
        "new_dialog", with_arg(VALID_NEW, pos, []), BAD_TYPE,
        f"{arg}: {expected_of(arg)}, got array")
    TYPE_MATRIX[f"new_dialog-{arg}-msgpack-uuid"] = accepted(
        "new_dialog", with_arg(VALID_NEW, pos, mp_uuid([DIALOG, ALICE, BOB][pos])), 1)
    TYPE_MATRIX[f"new_dialog-{arg}-uuid-ext-15-bytes"] = refused(
        "new_dialog", with_arg(VALID_NEW, pos, msgpack.ExtType(2, b"\x01" * 15)), BAD_TYPE,
        f"{arg}: {EXPECTED_UUID}, got malformed uuid extension")
    TYPE_MATRIX[f"new_dialog-{arg}-uuid-ext-17-bytes"] = refused(
        "new_dialog", with_arg(VALID_NEW, pos, msgpack.ExtType(2, b"\x01" * 17)), BAD_TYPE,
        f"{arg}: {EXPECTED_UUID}, got malformed uuid extension")
for tid, value, tname in TYPES + [EMPTY_ARRAY]:
    TYPE_MATRIX[f"new_dialog-text-{tid}"] = refused(
        "new_dialog", with_arg(VALID_NEW, 3, value), BAD_TYPE, f"text: expected a string, got {tname}")
TYPE_MATRIX["new_dialog-text-msgpack-uuid"] = refused(
    "new_dialog", with_arg(VALID_NEW, 3, mp_uuid(ALICE)), BAD_TYPE,
    "text: expected a string, got uuid")
for tid, value, tname in TYPES + [EMPTY_ARRAY]:
    key = f"new_dialog-opts-{tid}"
    if value is None or tid in ("empty-map", "empty-array"):
        TYPE_MATRIX[key] = accepted("new_dialog", VALID_NEW + [value], 1)
    elif tid == "map":
        TYPE_MATRIX[key] = refused("new_dialog", VALID_NEW + [value], BAD_OPTION,
                                   'opts: unknown option "a"')
    else:
        TYPE_MATRIX[key] = refused("new_dialog", VALID_NEW + [value], BAD_TYPE,
                                   f"opts: expected a map, got {tname}")
for tid, value, tname in TYPES + [EMPTY_ARRAY]:
    TYPE_MATRIX[f"get_dialog-dialog_id-{tid}"] = refused(
        "get_dialog", [value], BAD_TYPE, f"dialog_id: {EXPECTED_DIALOG}, got {tname}")
    key = f"get_dialog-opts-{tid}"
    if value is None or tid in ("empty-map", "empty-array"):
        TYPE_MATRIX[key] = accepted("get_dialog", [str(DIALOG), value], 0)
    elif tid == "map":
        TYPE_MATRIX[key] = refused("get_dialog", [str(DIALOG), value], BAD_OPTION,
                                   'opts: unknown option "a"')
    else:
        TYPE_MATRIX[key] = refused("get_dialog", [str(DIALOG), value], BAD_TYPE,
                                   f"opts: expected a map, got {tname}")
TYPE_MATRIX["get_dialog-dialog_id-msgpack-uuid"] = accepted("get_dialog", [mp_uuid(DIALOG)], 0)
# The uuid-typed options take every type too.
for opt in ("after", "before"):
    for tid, value, tname in TYPES + [EMPTY_ARRAY]:
        if value is None:  # a nil option is an absent option
            TYPE_MATRIX[f"get_dialog-{opt}-nil"] = accepted("get_dialog", [str(DIALOG), {opt: None}], 0)
            continue
        TYPE_MATRIX[f"get_dialog-{opt}-{tid}"] = refused(
            "get_dialog", [str(DIALOG), {opt: value}], BAD_TYPE,
            f"opts.{opt}: {EXPECTED_UUID}, got {tname}")
for tid, value, tname in TYPES + [EMPTY_ARRAY]:
    if value is None:
        continue
    if isinstance(value, bool):
        TYPE_MATRIX[f"get_dialog-reverse-{tid}"] = accepted(
            "get_dialog", [str(DIALOG), {"reverse": value}], 0)
    else:
        TYPE_MATRIX[f"get_dialog-reverse-{tid}"] = refused(
            "get_dialog", [str(DIALOG), {"reverse": value}], BAD_TYPE,
            f"opts.reverse: expected a boolean, got {tname}")
    if tname != "integer":
        TYPE_MATRIX[f"get_dialog-limit-{tid}"] = refused(
            "get_dialog", [str(DIALOG), {"limit": value}], BAD_TYPE,
            f"opts.limit: expected an integer, got {tname}")
    if tname != "nil":
        TYPE_MATRIX[f"new_dialog-request_id-{tid}"] = refused(
            "new_dialog", VALID_NEW + [{"request_id": value}], BAD_TYPE,
            f"opts.request_id: {EXPECTED_UUID}, got {tname}")
TYPE_MATRIX["get_dialog-reverse-string"] = refused(
    "get_dialog", [str(DIALOG), {"reverse": "true"}], BAD_TYPE,
    "opts.reverse: expected a boolean, got string")
TYPE_MATRIX["get_dialog-limit-string"] = refused(
    "get_dialog", [str(DIALOG), {"limit": "10"}], BAD_TYPE,
    "opts.limit: expected an integer, got string")
TYPE_MATRIX["new_dialog-request_id-nil"] = accepted(
    "new_dialog", VALID_NEW + [{"request_id": None}], 1)

# --- 3. uuid spellings -------------------------------------------------------------------

CANON = "5d7c0a3e-2c11-4f0e-8f55-3a2b8c1d4e02"
CANON_2 = "c0ffee00-abcd-4ef0-9abc-def012345678"
LONG_GARBAGE = "x" * 50
MALFORMED_UUIDS = [
    ("empty", ""),
    ("short", CANON[:-1]),
    ("long", CANON + "0"),
    ("non-hex", CANON[:-1] + "g"),
    ("braces", "{" + CANON + "}"),
    ("urn", "urn:uuid:" + CANON),
    ("no-hyphens", CANON.replace("-", "")),
    ("hyphen-moved", CANON[:7] + "-" + CANON[7] + CANON[9:]),
    ("plus-for-hyphen", CANON.replace("-", "+", 1)),
    ("leading-space", " " + CANON[:-1]),
    ("trailing-newline", CANON[:-1] + "\n"),
    ("fullwidth-digit", CANON[:-1] + "\uff10"),  # 38 bytes, 36 characters
    ("long-garbage", LONG_GARBAGE),
]


def rust_debug(s: str) -> str:
    """How the module quotes a bad string: Rust's {:?} of at most 40 characters."""
    excerpt = s[:40] + ("…" if len(s) > 40 else "")
    out = []
    for ch in excerpt:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# dialog_id strings beyond the uuid spellings: keys and refused keys.
DIALOG_KEYS = [
    ("report", (CANON + CANON_2).encode()),
    ("one-byte", b"a"),
    ("cyrillic", "чат".encode()),
    ("255-bytes", b"k" * 255),
    ("256-bytes", b"k" * 256),
    ("70000-bytes", b"k" * 70000),
    ("invalid-utf8-tail", b"chat\xc3"),
    ("short-hex", b"deadbeef"),
    ("29-hex-digits", b"d" * 29),
    ("41-hex-digits", b"d" * 41),
    ("braced-32-digits", ("{" + CANON.replace("-", "") + "}").encode()),
    ("whitespace-around", (" " + CANON + "\t").encode()),
]

UUIDS = {}
UUID_SLOTS = [
    ("new_dialog", "dialog_id", lambda v: with_arg(VALID_NEW, 0, v)),
    ("new_dialog", "user_from", lambda v: with_arg(VALID_NEW, 1, v)),
    ("new_dialog", "user_to", lambda v: with_arg(VALID_NEW, 2, v)),
    ("new_dialog", "opts.request_id", lambda v: VALID_NEW + [{"request_id": v}]),
    ("get_dialog", "dialog_id", lambda v: [v]),
    ("get_dialog", "opts.after", lambda v: [str(DIALOG), {"after": v}]),
    ("get_dialog", "opts.before", lambda v: [str(DIALOG), {"before": v}]),
]
def dialog_string_refusal(s: bytes) -> Optional[str]:
    """The refusal of a dialog_id string (README "Dialog keys"), or None for a key
    or a canonical uuid: a mistyped uuid (30 to 40 hex digits and hyphens, inside
    white space, braces or after urn:uuid:) is a malformed uuid; any other string
    is a key of 1..=255 bytes of UTF-8."""
    t = s.strip(b" \t\n\r\x0b\x0c")
    if t.startswith(b"{") and t.endswith(b"}"):
        t = t[1:-1]
    elif t[:9].lower() == b"urn:uuid:":
        t = t[9:]
    if 30 <= len(t) <= 40 and all(c in b"0123456789abcdefABCDEF-" for c in t):
        try:
            if len(s) == 36 and str(uuid.UUID(s.decode())) == s.decode().lower():
                return None
        except ValueError:
            pass
        return f"dialog_id: malformed uuid {rust_debug(s.decode('utf-8', 'replace'))}"
    if not 1 <= len(s) <= 255:
        return f"dialog_id: a dialog key must be 1 to 255 bytes, got {len(s)}"
    try:
        s.decode()
    except UnicodeDecodeError:
        return "dialog_id: a dialog key must be valid UTF-8"
    return None


def dialog_string_case(proc: str, args: list, s: bytes) -> Case:
    message = dialog_string_refusal(s)
    if message is None:
        return accepted(proc, args, 1 if proc == "new_dialog" else 0)
    return refused(proc, args, BAD_UUID, message)


for proc, arg, build in UUID_SLOTS:
    for sid, s in MALFORMED_UUIDS:
        if arg == "dialog_id":
            # A dialog_id string is a uuid or a key (README "Dialog keys").
            UUIDS[f"{proc}-{arg}-{sid}"] = dialog_string_case(proc, build(s), s.encode())
            continue
        UUIDS[f"{proc}-{arg}-{sid}"] = refused(proc, build(s), BAD_UUID,
                                               f"{arg}: malformed uuid {rust_debug(s)}")
    if arg == "dialog_id":
        UUIDS[f"{proc}-{arg}-not-utf8"] = dialog_string_case(
            proc, build(raw_str(b"\xff" * 36)), b"\xff" * 36)
        for kid, key in DIALOG_KEYS:
            UUIDS[f"{proc}-{arg}-key-{kid}"] = dialog_string_case(proc, build(raw_str(key)), key)
    else:
        UUIDS[f"{proc}-{arg}-not-utf8"] = refused(
            proc, build(raw_str(b"\xff" * 36)), BAD_UUID,
            f"{arg}: malformed uuid \"{chr(0xfffd) * 36}\"")
    for nid, nil in [("nil-uuid-string", NIL_UUID), ("nil-uuid-ext", mp_uuid(uuid.UUID(int=0)))]:
        UUIDS[f"{proc}-{arg}-{nid}"] = refused(proc, build(nil), BAD_UUID,
                                               f"{arg}: the nil uuid is not a valid id")
    stores = 1 if proc == "new_dialog" else 0
    UUIDS[f"{proc}-{arg}-uppercase"] = accepted(proc, build(CANON.upper()), stores)
    # Another uuid than the uppercase case: for opts.request_id, one uuid in two
    # spellings is one request (a retry), which this table must not depend on.
    UUIDS[f"{proc}-{arg}-mixed-case"] = accepted(
        proc, build("".join(c.upper() if i % 2 else c for i, c in enumerate(CANON_2))), stores)
    UUIDS[f"{proc}-{arg}-max-uuid"] = accepted(proc, build("ffffffff-ffff-ffff-ffff-ffffffffffff"),
                                               stores)
    # Any version and variant is an id: only the nil uuid is refused.
    UUIDS[f"{proc}-{arg}-v1-uuid"] = accepted(proc, build(str(uuid.UUID(
        "c232ab00-9414-11ec-b3c8-9f6bdeced846"))), stores)

# --- 4. text -----------------------------------------------------------------------------

def new_with_text(text) -> list:
    return with_arg(VALID_NEW, 3, text if isinstance(text, Raw) else text)


TEXTS = {
    "empty": refused("new_dialog", new_with_text(""), BAD_TEXT,
                     "text: must be 1 to 4096 characters, got 0"),
    "one-char": accepted("new_dialog", new_with_text("a"), 1),
    "ascii-4096": accepted("new_dialog", new_with_text("a" * 4096), 1),
    "ascii-4097": refused("new_dialog", new_with_text("a" * 4097), BAD_TEXT,
                          "text: must be 1 to 4096 characters, got 4097"),
    # 2-, 3- and 4-byte characters: the limit is characters, not bytes.
    "2-byte-4096": accepted("new_dialog", new_with_text("é" * 4096), 1),
    "2-byte-4097": refused("new_dialog", new_with_text("é" * 4097), BAD_TEXT,
                           "text: must be 1 to 4096 characters, got 4097"),
    "3-byte-4096": accepted("new_dialog", new_with_text("語" * 4096), 1),
    "4-byte-4096": accepted("new_dialog", new_with_text("🙂" * 4096), 1),
    "4-byte-4097": refused("new_dialog", new_with_text("🙂" * 4097), BAD_TEXT,
                           "text: must be 1 to 4096 characters, got 4097"),
    "mixed-4096": accepted("new_dialog", new_with_text(("aé語🙂" * 1024)), 1),
    "mixed-4097": refused("new_dialog", new_with_text(("aé語🙂" * 1024) + "a"), BAD_TEXT,
                          "text: must be 1 to 4096 characters, got 4097"),
    # A combining accent is a character of its own (Unicode scalar values).
    "combining-4096": accepted("new_dialog", new_with_text("e\u0301" * 2048), 1),
    "combining-4098": refused("new_dialog", new_with_text("e\u0301" * 2049), BAD_TEXT,
                              "text: must be 1 to 4096 characters, got 4098"),
    "huge-100000": refused("new_dialog", new_with_text("x" * 100_000), BAD_TEXT,
                           "text: must be 1 to 4096 characters, got 100000"),
    "nul-and-controls": accepted("new_dialog", new_with_text("a\x00b\x01\n\t"), 1),
    "whitespace-only": accepted("new_dialog", new_with_text(" "), 1),
}
INVALID_UTF8 = [
    ("lone-continuation", b"\x80"),
    ("truncated-2-byte", b"ab\xc3"),
    ("bad-continuation", b"h\xc3\x28"),
    ("overlong-slash", b"\xc0\xaf"),
    ("surrogate", b"\xed\xa0\x80"),
    ("above-max", b"\xf4\x90\x80\x80"),
    ("ff-fe", b"\xff\xfe"),
    ("valid-then-bad", "🙂".encode() * 10 + b"\xe2\x82"),
    ("latin1-4097", b"\xe9" * 4097),
]
for tid, payload in INVALID_UTF8:
    TEXTS[f"invalid-utf8-{tid}"] = refused("new_dialog", new_with_text(raw_str(payload)),
                                           BAD_TEXT, "text: not valid UTF-8")

# --- 5. option maps ----------------------------------------------------------------------

RID = "3f1c2d4e-5a6b-4c7d-8e9f-a0b1c2d3e4f5"
OPTIONS = {
    "new-unknown": refused("new_dialog", VALID_NEW + [{"bogus": 1}], BAD_OPTION,
                           'opts: unknown option "bogus"'),
    "new-unknown-case": refused("new_dialog", VALID_NEW + [{"Request_id": RID}], BAD_OPTION,
                                'opts: unknown option "Request_id"'),
    "new-get-option": refused("new_dialog", VALID_NEW + [{"limit": 5}], BAD_OPTION,
                              'opts: unknown option "limit"'),
    "new-unknown-after-known": refused(
        "new_dialog", VALID_NEW + [{"request_id": RID, "extra": True}], BAD_OPTION,
        'opts: unknown option "extra"'),
    "new-unknown-long": refused("new_dialog", VALID_NEW + [{"k" * 300: 1}], BAD_OPTION,
                                f'opts: unknown option "{"k" * 40}…"'),
    "new-unknown-empty-name": refused("new_dialog", VALID_NEW + [{"": 1}], BAD_OPTION,
                                      'opts: unknown option ""'),
    "new-unknown-not-utf8": refused(
        "new_dialog", VALID_NEW + [raw_map((raw_str(b"\xff"), 1))], BAD_OPTION,
        f'opts: unknown option "{chr(0xfffd)}"'),
    "new-key-integer": refused("new_dialog", VALID_NEW + [{1: RID}], BAD_OPTION,
                               "opts: option names must be strings, got integer"),
    "new-key-nil": refused("new_dialog", VALID_NEW + [raw_map((None, RID))], BAD_OPTION,
                           "opts: option names must be strings, got nil"),
    "new-key-binary": refused("new_dialog", VALID_NEW + [raw_map((b"request_id", RID))],
                              BAD_OPTION, "opts: option names must be strings, got binary"),
    "new-repeated": refused("new_dialog", VALID_NEW + [raw_map(("request_id", RID),
                                                               ("request_id", RID))],
                            BAD_OPTION, 'opts: option "request_id" given twice'),
    "new-repeated-after-nil": refused(
        "new_dialog", VALID_NEW + [raw_map(("request_id", None), ("request_id", RID))],
        BAD_OPTION, 'opts: option "request_id" given twice'),
    "new-request_id-string-uuid": accepted("new_dialog", VALID_NEW + [{"request_id": RID}], 1),
    "get-unknown": refused("get_dialog", [str(DIALOG), {"offset": 10}], BAD_OPTION,
                           'opts: unknown option "offset"'),
    "get-unknown-case": refused("get_dialog", [str(DIALOG), {"Limit": 10}], BAD_OPTION,
                                'opts: unknown option "Limit"'),
    "get-new-option": refused("get_dialog", [str(DIALOG), {"request_id": RID}], BAD_OPTION,
                              'opts: unknown option "request_id"'),
    "get-key-integer": refused("get_dialog", [str(DIALOG), {1: 2}], BAD_OPTION,
                               "opts: option names must be strings, got integer"),
    "get-key-array": refused("get_dialog", [str(DIALOG), raw_map(([1], 2))], BAD_OPTION,
                             "opts: option names must be strings, got array"),
    "get-repeated-limit": refused("get_dialog", [str(DIALOG), raw_map(("limit", 1), ("limit", 2))],
                                  BAD_OPTION, 'opts: option "limit" given twice'),
    "get-repeated-reverse": refused(
        "get_dialog", [str(DIALOG), raw_map(("reverse", True), ("limit", 5), ("reverse", True))],
        BAD_OPTION, 'opts: option "reverse" given twice'),
    "get-all-options": accepted("get_dialog", [str(DIALOG), {
        "limit": 5, "after": str(ALICE), "before": str(BOB), "reverse": True}], 0),
    "get-all-nil": accepted("get_dialog", [str(DIALOG), {
        "limit": None, "after": None, "before": None, "reverse": None}], 0),
}

# --- 6. limits ---------------------------------------------------------------------------

def get_limit(limit) -> list:
    return [str(DIALOG), {"limit": limit}]


LIMITS = {
    "0": refused("get_dialog", get_limit(0), BAD_OPTION, "opts.limit: must be 1 to 1000, got 0"),
    "1": accepted("get_dialog", get_limit(1), 0),
    "1000": accepted("get_dialog", get_limit(1000), 0),
    "1001": refused("get_dialog", get_limit(1001), BAD_OPTION,
                    "opts.limit: must be 1 to 1000, got 1001"),
    "-1": refused("get_dialog", get_limit(-1), BAD_OPTION, "opts.limit: must be 1 to 1000, got -1"),
    "min-int64": refused("get_dialog", get_limit(-2**63), BAD_OPTION,
                         f"opts.limit: must be 1 to 1000, got {-2**63}"),
    "2^32": refused("get_dialog", get_limit(2**32), BAD_OPTION,
                    f"opts.limit: must be 1 to 1000, got {2**32}"),
    "max-uint64": refused("get_dialog", get_limit(2**64 - 1), BAD_OPTION,
                          f"opts.limit: must be 1 to 1000, got {2**64 - 1}"),
    # Encodings a connector may pick for small numbers: signed int8 and uint64.
    "1-as-int8": accepted("get_dialog", get_limit(Raw(b"\xd0\x01")), 0),
    "1000-as-uint64": accepted("get_dialog", get_limit(Raw(b"\xcf" + struct.pack(">Q", 1000))), 0),
    "0-as-int64": refused("get_dialog", get_limit(Raw(b"\xd3" + struct.pack(">q", 0))),
                          BAD_OPTION, "opts.limit: must be 1 to 1000, got 0"),
    "1.0-float": refused("get_dialog", get_limit(1.0), BAD_TYPE,
                         "opts.limit: expected an integer, got float"),
}

def malformed_extension(value) -> bool:
    """Whether an argument holds a msgpack extension that a server checking
    extensions refuses: a uuid (type 2) that is not 16 bytes, or an error (type 3)
    whose payload does not decode (the tables' only error extension is an empty
    map, which has no error stack)."""
    if isinstance(value, msgpack.ExtType):
        return (value.code == 2 and len(value.data) != 16) or value.code == 3
    if isinstance(value, list):
        return any(malformed_extension(v) for v in value)
    if isinstance(value, dict):
        return any(malformed_extension(k) or malformed_extension(v) for k, v in value.items())
    return False


def for_this_server(case: Case) -> Case:
    """The documented reply on this server: a server that checks extensions refuses
    a malformed one itself, with its own code and message."""
    if CHECKS_EXTENSIONS and malformed_extension(case.args):
        assert case.code, "a call with a malformed extension is refused on every server"
        return refused(case.proc, case.args, ER_INVALID_MSGPACK, INVALID_MSGPACK_BODY)
    return case


ALL_CASES = {}
for table_name, table in [("arity", ARITY), ("type", TYPE_MATRIX), ("uuid", UUIDS),
                          ("text", TEXTS), ("opts", OPTIONS), ("limit", LIMITS)]:
    for key, case in table.items():
        ALL_CASES[f"{table_name}:{key}"] = for_this_server(case)


# --- the server and the checks ----------------------------------------------------------

@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One server with an admin console for the whole table; nothing else writes to it."""
    srv = Server(tmp_path_factory.mktemp("hostile"), name="hostile", **admin_kwargs({}))
    srv.start()
    admin = AdminConsole(admin_socket(srv))
    raw = RawConnection(srv.host, srv.port, srv.user, srv.password)
    yield srv, admin, raw
    raw.close()
    admin.close()
    srv.stop()
    remove_socket_dir(srv)


def space_sizes(admin) -> tuple:
    return tuple(admin.eval("{box.space.dialogs:len(), box.space.dialogs_requests:len()}"))


def next_valid_call_works(raw, admin, before: tuple) -> None:
    dialog, a, b = (str(uuid.uuid4()) for _ in range(3))
    code, data = raw.call("new_dialog", encode([dialog, a, b, "the next call"]))
    assert code == 0, (code, data)
    message_id_of(server_key(raw), data)
    assert space_sizes(admin) == (before[0] + 1, before[1])


@pytest.mark.parametrize("case", list(ALL_CASES.values()), ids=list(ALL_CASES))
def test_hostile_call(hostile, case: Case):
    srv, admin, raw = hostile
    before = space_sizes(admin)
    code, payload = raw.call(case.proc, encode(case.args))
    if case.code:
        assert (code, payload) == (case.code, case.message)
        assert space_sizes(admin) == before, "a refused call changed a space"
    else:
        assert code == 0, (code, payload)
        after = space_sizes(admin)
        with_rid = any(isinstance(a, dict) and a.get("request_id") for a in case.args)
        assert after[0] == before[0] + case.stores, (before, after)
        assert after[1] in (before[1], before[1] + (1 if with_rid else 0)), (before, after)
        if case.proc == "new_dialog":
            # The reply is the stored message's id, in canonical form.
            msg_id = message_id_of(server_key(raw), payload)
            assert str(uuid.UUID(msg_id)) == msg_id
            assert admin.eval(f"box.space.dialogs:get(require('uuid').fromstr('{msg_id}')) ~= nil")
        else:
            assert len(messages_of(server_key(raw), payload)) <= 1000
        before = space_sizes(admin)
    next_valid_call_works(raw, admin, before)
    assert srv.is_running()


def test_every_case_class_is_present():
    """The tables cover what issue 4 lists (guards against a table silently emptied)."""
    ids = set(ALL_CASES)
    for n in range(7):
        assert f"arity:new_dialog-{n}-args" in ids and f"arity:get_dialog-{n}-args" in ids
    for tid, _, _ in TYPES:
        for pos in ("dialog_id", "user_from", "user_to", "text", "opts"):
            assert f"type:new_dialog-{pos}-{tid}" in ids, (pos, tid)
        for pos in ("dialog_id", "opts"):
            assert f"type:get_dialog-{pos}-{tid}" in ids, (pos, tid)
    assert len(ALL_CASES) > 400
    # The malformed extensions: refused by the server or by the procedure, never
    # accepted (18 cases: a 15- and a 17-byte uuid in three positions, an error
    # extension in twelve).
    malformed = [c for c in ALL_CASES.values() if malformed_extension(c.args)]
    assert len(malformed) == 18 and all(c.code for c in malformed)
    expected = ({ER_INVALID_MSGPACK} if CHECKS_EXTENSIONS else {BAD_TYPE})
    assert {c.code for c in malformed} == expected


# --- 7. the inbox's procedures: arity and every type in every position --------------------
# Refusals (and list_dialogs' accepted calls) of list_dialogs and mark_read; a table of
# its own, run by its own test, so that the counts above stay those of the two message
# procedures. A refused call writes nothing: neither space above, nor the inbox's.

LIST_SIG = "list_dialogs: expected 1 or 2 arguments (user_id [, opts])"
MARK_SIG = "mark_read: expected 3 arguments (user_id, dialog_id, up_to_id)"
NOT_IN_DIALOG = 1013
NOT_IN_DIALOG_MESSAGE = "up_to_id: not a message of this user in this dialog"
# An id no message has (message ids are UUIDv7, with their time in front).
NO_MESSAGE = "00000000-0000-4000-8000-000000000001"
VALID_MARK = [str(ALICE), str(DIALOG), NO_MESSAGE]
# A user no case writes for: its inbox stays empty, whatever the other tables store.
LONER = uuid.UUID("3c6e1a57-0f2b-4d8e-b9a4-7e5d2c1f0a04")

INBOX_CASES = {}
_list_full = [str(LONER), {"limit": 1}, None, "x", 1, 2]
_mark_full = VALID_MARK + [None, "x", 1]
for n in range(7):
    INBOX_CASES[f"list_dialogs-{n}-args"] = (
        accepted("list_dialogs", _list_full[:n], 0) if n in (1, 2)
        else refused("list_dialogs", _list_full[:n], BAD_ARITY, f"{LIST_SIG}, got {n}"))
    INBOX_CASES[f"mark_read-{n}-args"] = (
        refused("mark_read", _mark_full[:n], NOT_IN_DIALOG, NOT_IN_DIALOG_MESSAGE) if n == 3
        else refused("mark_read", _mark_full[:n], BAD_ARITY, f"{MARK_SIG}, got {n}"))
INBOX_CASES["list_dialogs-msgpack-uuid"] = accepted("list_dialogs", [mp_uuid(LONER)], 0)
for tid, value, tname in TYPES + [EMPTY_ARRAY]:
    INBOX_CASES[f"list_dialogs-user_id-{tid}"] = refused(
        "list_dialogs", [value], BAD_TYPE, f"user_id: {EXPECTED_UUID}, got {tname}")
    key = f"list_dialogs-opts-{tid}"
    if value is None or tid in ("empty-map", "empty-array"):
        INBOX_CASES[key] = accepted("list_dialogs", [str(LONER), value], 0)
    elif tid == "map":
        INBOX_CASES[key] = refused("list_dialogs", [str(LONER), value], BAD_OPTION,
                                   'opts: unknown option "a"')
    else:
        INBOX_CASES[key] = refused("list_dialogs", [str(LONER), value], BAD_TYPE,
                                   f"opts: expected a map, got {tname}")
    if value is not None and tname != "integer":
        INBOX_CASES[f"list_dialogs-limit-{tid}"] = refused(
            "list_dialogs", [str(LONER), {"limit": value}], BAD_TYPE,
            f"opts.limit: expected an integer, got {tname}")
    if value is not None:
        INBOX_CASES[f"list_dialogs-before-{tid}"] = refused(
            "list_dialogs", [str(LONER), {"before": value}], BAD_TYPE,
            f"opts.before: {EXPECTED_UUID}, got {tname}")
    for pos, arg in [(0, "user_id"), (1, "dialog_id"), (2, "up_to_id")]:
        INBOX_CASES[f"mark_read-{arg}-{tid}"] = refused(
            "mark_read", with_arg(VALID_MARK, pos, value), BAD_TYPE,
            f"{arg}: {expected_of(arg)}, got {tname}")
for pos, arg in [(0, "user_id"), (1, "dialog_id"), (2, "up_to_id")]:
    INBOX_CASES[f"mark_read-{arg}-msgpack-uuid"] = refused(
        "mark_read", with_arg(VALID_MARK, pos, mp_uuid(uuid.UUID(VALID_MARK[pos]))),
        NOT_IN_DIALOG, NOT_IN_DIALOG_MESSAGE)
    INBOX_CASES[f"mark_read-{arg}-nil-uuid"] = refused(
        "mark_read", with_arg(VALID_MARK, pos, NIL_UUID), BAD_UUID,
        f"{arg}: the nil uuid is not a valid id")
for limit, code, message in [(0, BAD_OPTION, "opts.limit: must be 1 to 100, got 0"),
                             (1, 0, None), (100, 0, None),
                             (101, BAD_OPTION, "opts.limit: must be 1 to 100, got 101"),
                             (-1, BAD_OPTION, "opts.limit: must be 1 to 100, got -1"),
                             (2**64 - 1, BAD_OPTION,
                              f"opts.limit: must be 1 to 100, got {2**64 - 1}")]:
    INBOX_CASES[f"list_dialogs-limit-{limit}"] = Case("list_dialogs", [str(LONER), {"limit": limit}],
                                                      code, message)
INBOX_CASES = {k: for_this_server(c) for k, c in INBOX_CASES.items()}


def inbox_sizes(admin) -> tuple:
    return tuple(admin.eval("{box.space.dialogs_inbox:len(), "
                            "box.space.dialogs_inbox_totals:len(), "
                            "box.space.dialogs_outbox:len()}"))


@pytest.mark.parametrize("case", list(INBOX_CASES.values()), ids=list(INBOX_CASES))
def test_hostile_inbox_call(hostile, case: Case):
    srv, admin, raw = hostile
    before, inbox = space_sizes(admin), inbox_sizes(admin)
    code, payload = raw.call(case.proc, encode(case.args))
    if case.code:
        assert (code, payload) == (case.code, case.message)
    else:
        # list_dialogs: one map, in new_dialog's shape (README "Reply shape").
        assert code == 0, (code, payload)
        reply = payload[0] if results_one_value_each(server_key(raw)) else payload[0][0]
        assert reply["dialogs"] == [] and reply["next"] is None, reply
    assert (space_sizes(admin), inbox_sizes(admin)) == (before, inbox), "a space changed"
    next_valid_call_works(raw, admin, before)
    assert srv.is_running()


# --- 8. a request_id reused with other content, through the table's connection -----------

def test_request_id_conflict_writes_nothing(hostile):
    srv, admin, raw = hostile
    rid = str(uuid.uuid4())
    dialog, a, b = (str(uuid.uuid4()) for _ in range(3))
    code, first = raw.call("new_dialog", encode([dialog, a, b, "once", {"request_id": rid}]))
    assert code == 0, first
    first_id = message_id_of(server_key(raw), first)
    before = space_sizes(admin)
    for args in ([dialog, a, b, "twice"], [dialog, b, a, "once"], [None, a, b, "once"],
                 [str(uuid.uuid4()), a, b, "once"]):
        code, message = raw.call("new_dialog", encode(args + [{"request_id": rid}]))
        assert (code, message) == (
            REQUEST_CONFLICT,
            f"opts.request_id: already used for message {first_id} with other content")
        assert space_sizes(admin) == before
    # The same content, the request id as a msgpack uuid: the first id again.
    code, again = raw.call("new_dialog",
                           encode([dialog, a, b, "once", {"request_id": mp_uuid(uuid.UUID(rid))}]))
    assert code == 0 and again == first
    assert space_sizes(admin) == before
    next_valid_call_works(raw, admin, before)


# --- 9. cursors are positions, not lookups -------------------------------------------------

def get_rows(raw, dialog, opts=None) -> list:
    args = [dialog] + ([opts] if opts is not None else [])
    code, data = raw.call("get_dialog", encode(args))
    assert code == 0, (code, data)
    return [str(uuid.UUID(bytes=r[0].data)) for r in messages_of(server_key(raw), data)]


def test_cursors_are_positions_not_lookups(hostile):
    srv, admin, raw = hostile
    d1, d2 = str(uuid.uuid4()), str(uuid.uuid4())
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    mine, theirs = [], []
    # Interleaved in time: the two dialogs' ids alternate.
    for i in range(6):
        for dialog, out in ((d1, mine), (d2, theirs)):
            code, data = raw.call("new_dialog", encode([dialog, a, b, f"m{i}"]))
            assert code == 0, data
            out.append(message_id_of(server_key(raw), data))
    assert get_rows(raw, d1) == mine
    before = space_sizes(admin)

    def expect(opts, ids):
        assert get_rows(raw, d1, opts) == ids, opts
        assert space_sizes(admin) == before

    # A cursor from another dialog: a position between this dialog's messages.
    for k, cursor in enumerate(theirs):
        expect({"after": cursor}, mine[k + 1:])
        expect({"before": cursor}, mine[:k + 1])
        expect({"before": cursor, "reverse": True}, list(reversed(mine[:k + 1])))
        expect({"after": cursor, "reverse": True}, list(reversed(mine[k + 1:])))
    # Cursors that match no message at all.
    lowest, highest = "00000000-0000-0000-0000-000000000001", "ffffffff-ffff-ffff-ffff-ffffffffffff"
    expect({"after": lowest}, mine)
    expect({"after": highest}, [])
    expect({"before": highest}, mine)
    expect({"before": lowest}, [])
    expect({"before": highest, "reverse": True, "limit": 2}, list(reversed(mine))[:2])
    # A cursor that is this dialog's own message: exclusive.
    expect({"after": mine[2]}, mine[3:])
    expect({"after": mine[1], "before": mine[4]}, mine[2:4])
    expect({"after": mine[4], "before": mine[1]}, [])  # an empty window
    expect({"after": mine[3], "before": mine[3]}, [])
    # Random v4 ids sort by their random high bits: still just positions.
    for _ in range(10):
        r = str(uuid.uuid4())
        expect({"after": r}, [m for m in mine if uuid.UUID(m) > uuid.UUID(r)])
        expect({"before": r}, [m for m in mine if uuid.UUID(m) < uuid.UUID(r)])
    # A dialog that does not exist: empty, whatever the cursor.
    assert get_rows(raw, str(uuid.uuid4()), {"after": mine[0]}) == []
    next_valid_call_works(raw, admin, before)
