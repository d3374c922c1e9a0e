"""What a client of the inbox writes (docs/inbox.md): list_dialogs and mark_read with
their replies in exactly the server's shape, and the operator's recount
(scripts/recount) as the tests run it.

Kept apart from the tests so the crash, failover and rejoin tests read inboxes the
same way.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from typing import Optional

from dialogs_api import results_one_value_each, server_key
from harness import REPO_ROOT

NOT_IN_DIALOG = 1013
NOT_IN_DIALOG_MESSAGE = "up_to_id: not a message of this user in this dialog"
MAX_LIST = 100
DEFAULT_LIST = 20
# The keys of an entry of list_dialogs' reply, and of the reply itself.
ENTRY_KEYS = {"dialog_id", "peer_id", "last_id", "last_from", "last_text", "unread",
              "read_id", "peer_read_id"}
REPLY_KEYS = {"dialogs", "unread_messages", "unread_dialogs", "next"}

RECOUNT = REPO_ROOT / "scripts" / "recount"
RECOUNT_TIMEOUT_S = 300
EXIT_DRIFT = 3
# The counts scripts/recount prints, one `name: value` line each.
RECOUNT_COUNTS = ("messages", "dialogs", "entries", "wrong", "missing", "extra", "users",
                  "totals_wrong", "receipts_behind", "walked_again")
# The counts that are differences (receipts behind are not: docs/inbox.md, "Recount").
DRIFT_COUNTS = ("wrong", "missing", "extra", "totals_wrong")


def one_value(key, data, what: str):
    """The single result of a procedure that returns one value, in exactly the
    server's shape: [v] where results go one value each, else [[v]]."""
    data = list(data)
    if results_one_value_each(key):
        assert len(data) == 1, f"{what}: expected [value], got {data!r}"
        return data[0]
    assert len(data) == 1 and isinstance(data[0], (list, tuple)) and len(data[0]) == 1, \
        f"{what}: expected [[value]], got {data!r}"
    return data[0][0]


def list_dialogs(conn, user_id, opts: Optional[dict] = None) -> dict:
    """list_dialogs' reply map, checked for its shape."""
    args = [str(user_id) if isinstance(user_id, uuid.UUID) else user_id]
    if opts is not None:
        args.append(opts)
    reply = one_value(server_key(conn), conn.call("list_dialogs", args).data, "list_dialogs")
    assert isinstance(reply, dict) and set(reply) == REPLY_KEYS, reply
    for e in reply["dialogs"]:
        assert set(e) == ENTRY_KEYS, e
    return reply


def all_dialogs(conn, user_id, limit: int = MAX_LIST) -> list:
    """Every entry of a user's inbox, page by page with `next`, most recent first."""
    out, opts = [], {"limit": limit}
    while True:
        page = list_dialogs(conn, user_id, dict(opts))
        out += page["dialogs"]
        if page["next"] is None:
            return out
        opts["before"] = page["next"]


def mark_read(conn, user_id, dialog_id, up_to_id) -> int:
    """mark_read's reply: the unread count after it."""
    args = [str(a) if isinstance(a, uuid.UUID) else a for a in (user_id, dialog_id, up_to_id)]
    n = one_value(server_key(conn), conn.call("mark_read", args).data, "mark_read")
    assert isinstance(n, int) and n >= 0, n
    return n


def run_recount(socket_path, *, repair: bool = False) -> tuple:
    """scripts/recount on an admin socket: (exit status, {count: value}, output)."""
    args = ["tarantool", str(RECOUNT), str(socket_path)] + (["--repair"] if repair else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=RECOUNT_TIMEOUT_S)
    counts = {name: int(v) for name, v in re.findall(r"^(\w+): (\d+)$", out.stdout, re.M)
              if name in RECOUNT_COUNTS}
    return out.returncode, counts, out.stdout + out.stderr


def recount_clean(socket_path) -> dict:
    """scripts/recount finds no difference (exit 0, every drift count 0): its counts."""
    rc, counts, output = run_recount(socket_path)
    assert rc == 0 and set(counts) == set(RECOUNT_COUNTS), output
    assert {k: counts[k] for k in DRIFT_COUNTS} == dict.fromkeys(DRIFT_COUNTS, 0), output
    # One store: every receipt is the peer's cursor itself.
    assert counts["receipts_behind"] == 0, output
    return counts
