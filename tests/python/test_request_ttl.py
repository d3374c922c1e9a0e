"""Request ids expire (DIALOGS_REQUEST_TTL): rows of dialogs_requests older than the
TTL go away in the background on the writable instance only, the messages stay, and
a retry after expiry stores the message anew (docs/guarantees.md, "A retry never
stores a message twice").

Where the age of a row is the subject, the clock is injected: the pruner
(dialogs.requests.prune) takes the time it prunes at, and a request's age comes
from its message id (a UUIDv7: its first 48 bits are Unix milliseconds), so a test
chooses "now" exactly between two batches instead of waiting for the TTL to pass.
What the background pruner does is read from its status (expiry_status), not
guessed from a sleep.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from dialogs_api import MAX_PAGE, derived_dialog_id, new_dialog, new_user, walk_dialog
from harness import REPO_ROOT, admin_eval, admin_socket, module_built, replica_set, wait_until

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

PROMOTE = REPO_ROOT / "scripts" / "promote"
REQUESTS = "box.space.dialogs_requests:len()"
MESSAGES = "box.space.dialogs:len()"
PRUNER = "require('dialogs.requests')"
WEEK_S = 7 * 24 * 3600
# The TTL the injected-clock prunes below work with (any will do: "now" is chosen
# from it).
TTL_S = 60
# Rows the pruner deletes per transaction (dialogs.requests.BATCH): the old batch
# spans three of them.
OLD_REQUESTS = 1100


def ttl_server(make_server, ttl: float, **kwargs):
    srv = make_server("ttl", start=False, env={"DIALOGS_REQUEST_TTL": str(ttl)}, **kwargs)
    srv.env["DIALOGS_ADMIN_SOCKET"] = str(srv.base_dir / "admin.sock")
    return srv.start()


def whole_dialog(conn, dialog) -> list:
    return [t for page in walk_dialog(conn, dialog, MAX_PAGE) for t in page]


def send(conn, a, b, texts, request_ids):
    return [new_dialog(conn, None, str(a), str(b), t, {"request_id": r})
            for t, r in zip(texts, request_ids)]


def id_ms(message_id: str) -> int:
    """The Unix milliseconds a message id (a UUIDv7) was issued at."""
    return int(uuid.UUID(message_id).hex[:12], 16)


def prune_at(srv, ttl_s: float, now_ms: int) -> int:
    """Runs the pruner once on srv as if the time were now_ms; how many it deleted."""
    return admin_eval(srv, f"{PRUNER}.prune({ttl_s}, {now_ms})")


def pruner_status(srv) -> dict:
    """What srv's pruner is doing (dialogs.requests.expiry_status); {} if none runs."""
    return admin_eval(srv, f"{PRUNER}.expiry_status()") or {}


def server_ms(srv) -> int:
    return admin_eval(srv, "math.floor(require('clock').time() * 1000)")


def test_request_ids_older_than_the_ttl_go_and_a_retry_after_expiry_stores_anew(
        make_server):
    # The server's own pruner keeps a week: only the prunes below delete.
    srv = ttl_server(make_server, WEEK_S)
    conn = srv.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    old_rids = [str(uuid.uuid4()) for _ in range(OLD_REQUESTS)]
    old = send(conn, a, b, [f"old {i}" for i in range(OLD_REQUESTS)], old_rids)
    # Within the TTL a retry is answered from the stored request.
    assert send(conn, a, b, ["old 7"], [old_rids[7]]) == [old[7]]
    # The young batch starts on a later millisecond than the old one ended.
    last_old_ms = max(id_ms(i) for i in old)
    wait_until(lambda: server_ms(srv) > last_old_ms, 10, "the server's clock to move on")
    young_rids = [str(uuid.uuid4()) for _ in range(20)]
    young = send(conn, a, b, [f"young {i}" for i in range(20)], young_rids)
    first_young_ms = min(id_ms(i) for i in young)
    assert first_young_ms > last_old_ms
    assert admin_eval(srv, REQUESTS) == OLD_REQUESTS + 20

    # At the moment the first young request is exactly TTL_S old: the old ones go,
    # the young ones stay (one on the cut-off itself).
    assert prune_at(srv, TTL_S, first_young_ms + TTL_S * 1000) == OLD_REQUESTS
    assert admin_eval(srv, REQUESTS) == 20
    assert send(conn, a, b, ["young 3"], [young_rids[3]]) == [young[3]]
    # Messages never expire.
    assert [str(t[0]) for t in whole_dialog(conn, dialog)] == old + young
    # A retry of an expired request stores the message again, under a new id.
    again = send(conn, a, b, ["old 7"], [old_rids[7]])
    assert again != [old[7]]
    assert [t[4] for t in whole_dialog(conn, dialog)].count("old 7") == 2
    # One millisecond past the TTL of the newest: every request id goes.
    assert prune_at(srv, TTL_S, id_ms(again[0]) + TTL_S * 1000 + 1) == 21
    assert admin_eval(srv, REQUESTS) == 0
    assert admin_eval(srv, MESSAGES) == OLD_REQUESTS + 21
    assert srv.log_errors() == []


def test_the_background_pruner_expires_request_ids(make_server):
    srv = ttl_server(make_server, 1)
    conn = srv.connect()
    a, b = new_user(), new_user()
    rids = [str(uuid.uuid4()) for _ in range(150)]
    ids = send(conn, a, b, [f"m {i}" for i in range(150)], rids)
    assert pruner_status(srv)["ttl"] == 1
    wait_until(lambda: admin_eval(srv, REQUESTS) == 0, 15, "the request ids to expire")
    assert [str(t[0]) for t in whole_dialog(conn, derived_dialog_id(a, b))] == ids
    assert srv.log_errors() == []


def test_the_default_ttl_keeps_request_ids_for_a_week(make_server):
    srv = ttl_server(make_server, 1)
    srv.env.pop("DIALOGS_REQUEST_TTL")
    srv.restart()
    conn = srv.connect()
    # Without DIALOGS_REQUEST_TTL, the running pruner keeps request ids a week.
    assert pruner_status(srv)["ttl"] == WEEK_S
    a, b = new_user(), new_user()
    rids = [str(uuid.uuid4()) for _ in range(5)]
    ids = send(conn, a, b, ["x"] * 5, rids)
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
    # Its pruner runs, with the replica's TTL, and waits for the instance to become
    # writable without having begun a pass, while the rows grow older than its TTL.
    waiting_rw = admin_eval(replica, f"{PRUNER}.WAITING_RW")
    wait_until(lambda: pruner_status(replica).get("state") == waiting_rw, 10,
               "the replica's pruner to wait for the instance to become writable")
    status = pruner_status(replica)
    assert status["ttl"] == 1 and status["passes"] == 0, status
    assert admin_eval(replica, REQUESTS) == 150
    assert admin_eval(replica, "box.info.vclock[box.info.id] or 0") == 0
    assert replica.log_errors() == []
    # Promoted (the master fenced first), the same instance expires them: its
    # pruner leaves the wait and begins its passes.
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
