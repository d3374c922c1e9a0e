"""Request ids expire (DIALOGS_REQUEST_TTL): rows of dialogs_requests older than the
TTL go away in the background on the writable instance only, the messages stay, and
a retry after expiry stores the message anew (docs/guarantees.md, "A retry never
stores a message twice")."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from dialogs_api import MAX_PAGE, derived_dialog_id, new_dialog, new_user, walk_dialog
from harness import REPO_ROOT, admin_eval, admin_socket, module_built, replica_set, wait_until

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

PROMOTE = REPO_ROOT / "scripts" / "promote"
REQUESTS = "box.space.dialogs_requests:len()"
MESSAGES = "box.space.dialogs:len()"


def ttl_server(make_server, ttl: float, **kwargs):
    srv = make_server("ttl", start=False, env={"DIALOGS_REQUEST_TTL": str(ttl)}, **kwargs)
    srv.env["DIALOGS_ADMIN_SOCKET"] = str(srv.base_dir / "admin.sock")
    return srv.start()


def whole_dialog(conn, dialog) -> list:
    return [t for page in walk_dialog(conn, dialog, MAX_PAGE) for t in page]


def send(conn, a, b, texts, request_ids):
    return [new_dialog(conn, None, str(a), str(b), t, {"request_id": r})
            for t, r in zip(texts, request_ids)]


def test_request_ids_expire_and_a_retry_after_expiry_stores_anew(make_server):
    srv = ttl_server(make_server, 4)
    conn = srv.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    old_rids = [str(uuid.uuid4()) for _ in range(1100)]  # three batches of 500
    old = send(conn, a, b, [f"old {i}" for i in range(1100)], old_rids)
    # Within the TTL a retry is answered from the stored request.
    assert send(conn, a, b, ["old 7"], [old_rids[7]]) == [old[7]]
    time.sleep(2.0)
    young_rids = [str(uuid.uuid4()) for _ in range(20)]
    young = send(conn, a, b, [f"young {i}" for i in range(20)], young_rids)
    assert admin_eval(srv, REQUESTS) == 1120
    # The old ones go, the young ones stay (they are 2 s younger).
    wait_until(lambda: admin_eval(srv, REQUESTS) == 20, 10, "the old request ids to expire")
    assert admin_eval(srv, REQUESTS) == 20
    assert send(conn, a, b, ["young 3"], [young_rids[3]]) == [young[3]]
    # Messages never expire.
    assert [str(t[0]) for t in whole_dialog(conn, dialog)] == old + young
    # A retry of an expired request stores the message again, under a new id.
    again = send(conn, a, b, ["old 7"], [old_rids[7]])
    assert again != [old[7]]
    assert [t[4] for t in whole_dialog(conn, dialog)].count("old 7") == 2
    wait_until(lambda: admin_eval(srv, REQUESTS) == 0, 15, "every request id to expire")
    assert admin_eval(srv, MESSAGES) == 1121
    assert srv.log_errors() == []


def test_the_default_ttl_keeps_request_ids(make_server):
    srv = ttl_server(make_server, 604800)
    srv.env.pop("DIALOGS_REQUEST_TTL")
    srv.restart()
    conn = srv.connect()
    a, b = new_user(), new_user()
    rids = [str(uuid.uuid4()) for _ in range(5)]
    ids = send(conn, a, b, ["x"] * 5, rids)
    time.sleep(1.0)
    assert admin_eval(srv, REQUESTS) == 5
    assert send(conn, a, b, ["x"] * 5, rids) == ids


def test_a_replica_never_expires_request_ids_until_it_is_promoted(make_server):
    # The master keeps request ids for a week; the replica is configured with 1 s.
    master, replica = replica_set(make_server, ["m", "r"])
    replica.env["DIALOGS_REQUEST_TTL"] = "1"
    master.start()
    replica.start()
    a, b = new_user(), new_user()
    rids = [str(uuid.uuid4()) for _ in range(150)]
    ids = send(master.connect(), a, b, [f"m {i}" for i in range(150)], rids)
    wait_until(lambda: admin_eval(replica, REQUESTS) == 150, 10, "the replica to catch up")
    time.sleep(3.0)  # three TTLs, thirty passes of a pruner
    assert admin_eval(replica, REQUESTS) == 150
    assert admin_eval(replica, "box.info.vclock[box.info.id] or 0") == 0
    assert replica.log_errors() == []
    # Promoted (the master fenced first), the same instance expires them.
    subprocess_run([str(PROMOTE), "--demote", str(admin_socket(master))])
    subprocess_run([str(PROMOTE), str(admin_socket(replica))])
    wait_until(lambda: admin_eval(replica, REQUESTS) == 0, 10, "expiry on the new master")
    assert admin_eval(replica, MESSAGES) == 150
    # The deletions replicate: the old master, now a replica, has none left either.
    wait_until(lambda: admin_eval(master, REQUESTS) == 0, 10, "deletions on the old master")
    assert [str(t[0]) for t in whole_dialog(replica.connect(), derived_dialog_id(a, b))] == ids


def subprocess_run(argv):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{argv}: {out.stdout}\n{out.stderr}"
