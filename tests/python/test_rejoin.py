"""Rejoining an old master after an asynchronous failover (docs/operations.md,
"Rejoining an old master"): scripts/rejoin refuses an instance that holds writes the new master never
got, exports those messages, moves its data aside, and replays them through
new_dialog with their request ids; every acknowledged message ends up stored exactly
once on the new master and on the rejoined replica, and replication keeps running.

Real `tarantool init.lua` instances on 127.0.0.1 (harness.Server), promotion through
scripts/promote, everything else through scripts/rejoin as an operator runs it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
import uuid
from collections import Counter

import pytest
import tarantool

from dialogs_api import (ID, MAX_PAGE, TEXT, derived_dialog_id, new_dialog, new_user,
                         walk_dialog)
from harness import (REPO_ROOT, admin_eval, admin_socket, module_built, replica_set,
                     wait_until)

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

PROMOTE = REPO_ROOT / "scripts" / "promote"
REJOIN = REPO_ROOT / "scripts" / "rejoin"
EXIT_DIVERGED = 3
ER_SYNC_QUORUM_TIMEOUT = 216
REPLICATION_WAIT_S = 15.0
# scripts/rejoin's namespace for the request ids of messages stored without one.
REPLAY_NAMESPACE = uuid.UUID("29b59a37-3f33-4d98-98ae-08142f98d752")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def promote(srv) -> subprocess.CompletedProcess:
    out = run(PROMOTE, admin_socket(srv))
    assert out.returncode == 0, f"promote failed:\n{out.stdout}\n{out.stderr}"
    return out


def rejoin(*args, expect: int = 0) -> subprocess.CompletedProcess:
    out = run(REJOIN, *args)
    assert out.returncode == expect, \
        f"scripts/rejoin {args}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def derived_request_id(message_id: str) -> uuid.UUID:
    """docs/operations.md: UUIDv5(REPLAY_NAMESPACE, the old message id's 16 bytes)."""
    digest = hashlib.sha1(REPLAY_NAMESPACE.bytes + uuid.UUID(message_id).bytes).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def dialog_messages(conn, dialog_id) -> list:
    """(id, text) of every message of a dialog, oldest first."""
    return [(str(t[ID]), t[TEXT]) for page in walk_dialog(conn, dialog_id, MAX_PAGE)
            for t in page]


def upstream_statuses(srv) -> list:
    """The status of each upstream (a peer this instance replicates from)."""
    return admin_eval(srv, "(function() local s = {} for _, r in pairs(box.info.replication) "
                           "do if r.upstream then table.insert(s, r.upstream.status) end end "
                           "return s end)()")


def test_rejoin_after_async_failover_keeps_every_acknowledged_message_once(make_server,
                                                                            tmp_path):
    old, new = replica_set(make_server, ["old", "new"])
    old.start()
    new.start()
    a, b = new_user(), new_user()
    pair = derived_dialog_id(a, b)  # dialog_id nil: derived from the pair
    topic = uuid.uuid4()            # an explicit dialog id
    acked = {pair: [], topic: []}   # dialog -> [(id, text)] acknowledged, in order

    def write(conn, dialog, text, request_id=None):
        msg_id = new_dialog(conn, None if dialog == pair else str(topic), str(a), str(b),
                            text, {"request_id": request_id} if request_id else None)
        acked[dialog].append((msg_id, text))
        return msg_id

    oc = old.connect()
    for i in range(4):
        write(oc, pair, f"replicated {i}", str(uuid.uuid4()))
    write(oc, topic, "replicated topic")
    nc = new.connect()
    wait_until(lambda: dialog_messages(nc, pair) == acked[pair], REPLICATION_WAIT_S,
               "the first writes on the replica")

    # The replica stops receiving; the master goes on acknowledging writes...
    admin_eval(new, "(function() box.cfg{replication = {}} return true end)()")
    diverged = []  # (id, dialog, text, request_id or None), in write order
    for i in range(6):
        dialog, rid = (pair if i % 2 else topic), str(uuid.uuid4())
        msg_id = write(oc, dialog, f"only on the old master {i} «ü»\n\"q\"", rid)
        diverged.append((msg_id, dialog, acked[dialog][-1][1], rid))
    for i in range(3):
        msg_id = write(oc, topic, f"no request id {i}")
        diverged.append((msg_id, topic, acked[topic][-1][1], None))
    assert dialog_messages(nc, topic) == acked[topic][:1]
    # ...and dies (kill -9) before they leave it. The replica is promoted and its
    # configuration made the master's, in the full mesh again.
    old.kill()
    promote(new)
    new.stop()
    new.env["DIALOGS_READ_ONLY"] = "false"
    new.start()
    nc = new.connect()

    # A client that lost the reply of a diverged write retries it on the new master
    # with the same request id: stored there now, under a new id.
    retried_id, retried_dialog, retried_text, retried_rid = diverged[3]
    assert retried_dialog == pair
    new_id = new_dialog(nc, None, str(a), str(b), retried_text, {"request_id": retried_rid})
    assert new_id != retried_id
    acked[pair] = [(new_id if i == retried_id else i, t) for i, t in acked[pair]]
    for i in range(3):
        write(nc, pair, f"on the new master {i}", str(uuid.uuid4()))

    # The old master may not rejoin as it is.
    out = rejoin("check", old.data_dir, "--master-socket", admin_socket(new),
                 expect=EXIT_DIVERGED)
    assert "diverged" in out.stdout
    assert "export" in out.stderr and "refused" in out.stderr
    old_id = int(re.search(r"replica id (\d+)", out.stdout).group(1))

    # Export, and move the data directory aside.
    export = tmp_path / "diverged.jsonl"
    out = rejoin("export", old.data_dir, "--master-socket", admin_socket(new),
                 "--to", export, "--wipe")
    assert f"exported {len(diverged)} message(s)" in out.stdout
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert [(r["id"], r["dialog_id"], r["text"], r["request_id"]) for r in rows] == \
        [(i, str(d), t, rid) for i, d, t, rid in diverged]
    assert all(r["user_from"] == str(a) and r["user_to"] == str(b) for r in rows)
    # created_at in microseconds since the epoch, whatever the field's type.
    assert all(isinstance(r["created_at"], int)
               and abs(r["created_at"] / 1e6 - time.time()) < 600 for r in rows)
    asides = list(old.base_dir.glob("data.diverged-*"))
    assert len(asides) == 1 and list(asides[0].glob("*.xlog")), "old data kept aside"
    assert not old.data_dir.exists()
    # An export is never overwritten.
    out = rejoin("export", asides[0], "--master-socket", admin_socket(new), "--to", export,
                 expect=1)
    assert "exists" in out.stderr

    # The old master rejoins as an empty replica of the new one.
    old.env["DIALOGS_READ_ONLY"] = "true"
    old.start()
    oc = old.connect()
    assert admin_eval(old, "box.info.id") != old_id

    # Replay: every diverged message but the retried one is stored now.
    out = rejoin("replay", export, "--master-socket", admin_socket(new))
    assert f"replay: {len(diverged) - 1} stored, 1 already present, 0 failed" in out.stdout
    replayed = dict(re.findall(r"^stored  (\S+) -> (\S+)", out.stdout, re.M))
    present = dict(re.findall(r"^present (\S+) -> (\S+)", out.stdout, re.M))
    assert present == {retried_id: new_id}
    for dialog in acked:
        acked[dialog] = [(i, t) for i, t in acked[dialog] if i not in replayed] + \
            [(replayed[i], t) for i, d, t, _ in diverged if d == dialog and i in replayed]
    # Each under its own request id; one derived from the old id where it had none.
    used = dict(re.findall(r"^stored  (\S+) -> \S+ \(request_id (\S+)\)", out.stdout, re.M))
    assert used == {i: rid or str(derived_request_id(i))
                    for i, _, _, rid in diverged if i != retried_id}

    # A second replay stores nothing.
    out = rejoin("replay", export, "--master-socket", admin_socket(new))
    assert f"replay: 0 stored, {len(diverged)} already present, 0 failed" in out.stdout

    # Every acknowledged message exactly once, on the master and on the rejoined
    # replica (the replayed ones last, in their old order), and each instance still
    # replicates from the other.
    for dialog, expected in acked.items():
        on_master = dialog_messages(nc, dialog)
        assert on_master == expected
        assert max(Counter(t for _, t in on_master).values()) == 1
        wait_until(lambda: dialog_messages(oc, dialog) == on_master, REPLICATION_WAIT_S,
                   f"dialog {dialog} on the rejoined replica")
    assert upstream_statuses(old) == ["follow"]
    wait_until(lambda: upstream_statuses(new) == ["follow"], REPLICATION_WAIT_S,
               "the new master following the rejoined replica")
    assert admin_eval(old, "box.info.ro") is True


def test_an_old_master_that_did_not_diverge_may_rejoin_as_it_is(make_server):
    old, new = replica_set(make_server, ["old", "new"])
    old.start()
    new.start()
    a, b = new_user(), new_user()
    oc, nc = old.connect(), new.connect()
    ids = [new_dialog(oc, None, str(a), str(b), f"m{i}") for i in range(5)]
    dialog = derived_dialog_id(a, b)
    wait_until(lambda: [i for i, _ in dialog_messages(nc, dialog)] == ids,
               REPLICATION_WAIT_S, "the writes on the replica")
    old.kill()
    out = promote(new)
    # The vclock as scripts/promote prints it is enough: no connection needed.
    vclock = re.search(r"vclock (\S+)$", out.stdout.strip()).group(1)
    out = rejoin("check", old.data_dir, "--master-vclock", vclock)
    assert "not diverged" in out.stdout and "may rejoin" in out.stdout
    rejoin("check", old.data_dir, "--master-socket", admin_socket(new))
    # Nothing diverged: an export is empty and the data directory stays.
    export = old.base_dir / "nothing.jsonl"
    out = rejoin("export", old.data_dir, "--master-vclock", vclock, "--to", export)
    assert "exported 0 message(s)" in out.stdout and export.read_text() == ""
    assert old.data_dir.is_dir()

    old.env["DIALOGS_READ_ONLY"] = "true"
    old.start()
    ids.append(new_dialog(new.connect(), None, str(a), str(b), "after the rejoin"))
    oc = old.connect()
    wait_until(lambda: [i for i, _ in dialog_messages(oc, dialog)] == ids,
               REPLICATION_WAIT_S, "the new master's write on the rejoined replica")
    assert upstream_statuses(old) == ["follow"]


def test_export_leaves_out_what_the_old_master_rolled_back(make_server, tmp_path):
    old, new = replica_set(make_server, ["old", "new"], sync_quorum=2,
                           env={"DIALOGS_SYNC_TIMEOUT": "0.5"})
    old.start()
    new.start()
    # Where the server has a synchronous queue with an owner (2.10+), the master
    # takes it if nobody has.
    admin_eval(old, "box.ctl.promote == nil or box.info.synchro.queue.owner ~= 0 "
                    "or box.ctl.promote() or true")
    a, b = new_user(), new_user()
    oc = old.connect()
    first = new_dialog(oc, None, str(a), str(b), "on both", {"request_id": str(uuid.uuid4())})
    # Without the replica's acknowledgement the next write times out and is rolled back.
    admin_eval(new, "(function() box.cfg{replication = {}} return true end)()")
    with pytest.raises(tarantool.error.DatabaseError) as e:
        new_dialog(oc, None, str(a), str(b), "rolled back", {"request_id": str(uuid.uuid4())})
    assert e.value.args[0] == ER_SYNC_QUORUM_TIMEOUT
    old.kill()
    # The survivor alone is the quorum now (an operator's act when half the set is gone).
    admin_eval(new, "(function() box.cfg{replication_synchro_quorum = 1} return true end)()")
    promote(new)
    out = rejoin("check", old.data_dir, "--master-socket", admin_socket(new),
                 expect=EXIT_DIVERGED)
    assert "diverged" in out.stdout
    export = tmp_path / "diverged.jsonl"
    out = rejoin("export", old.data_dir, "--master-socket", admin_socket(new), "--to", export)
    assert "exported 0 message(s)" in out.stdout
    assert "left out 1 message(s) it rolled back" in out.stdout
    assert export.read_text() == ""
    assert [i for i, _ in dialog_messages(new.connect(), derived_dialog_id(a, b))] == [first]


def test_rejoin_refuses_a_data_directory_in_use_and_bad_input(make_server, tmp_path):
    old, new = replica_set(make_server, ["old", "new"])
    old.start()
    out = rejoin("check", old.data_dir, "--master-vclock", "{1: 0}", expect=1)
    assert "stop the old instance first" in out.stderr
    out = rejoin("check", old.data_dir, expect=2)
    assert "--master-socket or --master-vclock" in out.stderr
    out = rejoin("check", old.data_dir, "--master-vclock", "{1: x}", expect=2)
    assert "--master-vclock" in out.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "not-a-uuid"}\n')
    out = rejoin("replay", bad, "--master-socket", admin_socket(old), expect=1)
    assert "bad.jsonl:1: id is not a uuid" in out.stderr
