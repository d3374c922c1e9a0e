"""Message ids against a clock that is behind them (README "Guarantees").

Each test runs its own server, so that an id stored from the future pins only that
server's ids.

- two writable instances over the same data (a split brain, a mistaken promote)
  with the clock behind their greatest id issue no common id.
"""

from __future__ import annotations

import shutil
import time
import uuid

import pytest

from dialogs_api import derived_dialog_id, new_dialog, new_user
from harness import admin_eval, module_built

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

HOUR_MS = 3_600_000


def v7_id(unix_ms: int, counter: int = 0) -> uuid.UUID:
    """A UUIDv7 with the given millisecond timestamp and 74-bit counter."""
    rand_a, rand_b = counter >> 62, counter & ((1 << 62) - 1)
    return uuid.UUID(int=(unix_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


def millis_of(msg_id) -> int:
    return uuid.UUID(str(msg_id)).int >> 80


def with_admin(make_server, name: str, **kwargs):
    srv = make_server(name, start=False, **kwargs)
    srv.env["DIALOGS_ADMIN_SOCKET"] = str(srv.base_dir / "admin.sock")
    return srv.start()


def store_as_admin(srv, msg_id, dialog_id, user_from, user_to, text):
    """Inserts a message tuple directly into the space, as an operator (or a
    replicated write from an instance with a wrong clock) would."""
    created_at = ("(box.space.dialogs:format()[6].type == 'datetime' "
                  "and require('datetime').now() or tonumber(require('clock').time64() / 1000))")
    args = ", ".join(f"uuid.fromstr('{u}')" for u in (msg_id, dialog_id, user_from, user_to))
    admin_eval(srv, f"(function() local uuid = require('uuid') "
                    f"box.space.dialogs:insert{{{args}, '{text}', {created_at}}} "
                    f"return true end)()")


def test_two_masters_over_the_same_data_issue_no_common_id(make_server):
    """A split brain: two writable instances start from copies of one data directory
    whose greatest id is ahead of their clocks, so neither takes a fresh clock
    reading; each steps from the same floor. Each issues strictly increasing ids,
    and no id is issued by both."""
    n = 2000
    origin = with_admin(make_server, "origin")
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    floor = v7_id(int(time.time() * 1000) + HOUR_MS, 0x1234)
    store_as_admin(origin, floor, dialog, a, b, "the greatest id")
    origin.stop()
    issued = []
    for name in ("left", "right"):
        srv = make_server(name, start=False)
        shutil.copytree(origin.data_dir, srv.data_dir)
        srv.start()
        conn = srv.connect()
        ids = [uuid.UUID(new_dialog(conn, None, str(a), str(b), f"{name} {i}"))
               for i in range(n)]
        srv.stop()
        assert all(x < y for x, y in zip([floor] + ids, ids)), f"{name}: not increasing"
        issued.append(ids)
    left, right = issued
    assert set(left).isdisjoint(right), "the same id issued by both instances"
