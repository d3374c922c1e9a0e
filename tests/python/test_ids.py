"""Message ids against a clock that is behind them (docs/guarantees.md).

Each test runs its own server, so that an id stored from the future pins only that
server's ids: the in-Tarantool suite checks ids against the clock strictly, and
could not if a test there stored one.

- a stored id from the future: later ids sort after it, and the server logs one
  warning with the distance (per process start, not per call);
- two writable instances over the same data (a split brain, a mistaken promote)
  with the clock behind their greatest id issue no common id.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid

import pytest

from dialogs_api import derived_dialog_id, get_dialog, new_dialog, new_user
from harness import admin_eval, module_built

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

WARNING = re.compile(r"W> dialogs: the greatest stored message id is ([0-9.]+) s ahead "
                     r"of this server's clock")
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
    # The seventh field: the dialog's bucket (docs/operations.md, "Data layout").
    bucket = (f"require('dialogs.bucket').of('{dialog_id}', "
              "require('dialogs.bucket').stored_count())")
    admin_eval(srv, f"(function() local uuid = require('uuid') "
                    f"box.space.dialogs:insert{{{args}, '{text}', {created_at}, {bucket}}} "
                    f"return true end)()")


def warnings(srv) -> list:
    return [float(m.group(1)) for m in WARNING.finditer(srv.log_of_run())]


def test_an_id_from_the_future_pins_later_ids_and_is_logged_once(make_server):
    srv = with_admin(make_server, "future")
    conn = srv.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    first = new_dialog(conn, None, str(a), str(b), "now")
    assert warnings(srv) == []
    future = v7_id(int(time.time() * 1000) + HOUR_MS, 0x1234)
    store_as_admin(srv, future, dialog, a, b, "an hour ahead")
    later = [new_dialog(conn, None, str(a), str(b), f"after it {i}") for i in range(50)]
    assert sorted(later) == later and uuid.UUID(later[0]) > future
    # Every later id carries the future millisecond (the clock is an hour behind).
    assert {millis_of(i) for i in later} == {millis_of(future)}
    assert [str(t[0]) for t in get_dialog(conn, dialog)] == [first, str(future), *later]
    # One warning for 50 calls, with the distance: an hour, less the time taken.
    [ahead] = warnings(srv)
    assert HOUR_MS / 1000 - 60 < ahead <= HOUR_MS / 1000
    # Once per process start: a restarted server warns again at its first write.
    srv.restart()
    conn = srv.connect()
    assert warnings(srv) == []
    again = [new_dialog(conn, None, str(a), str(b), f"after a restart {i}") for i in range(5)]
    assert uuid.UUID(again[0]) > uuid.UUID(later[-1])
    assert len(warnings(srv)) == 1


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
