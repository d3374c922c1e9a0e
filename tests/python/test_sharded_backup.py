"""A sharded store backed up as one cut and restored (docs/backup.md, "A sharded
store"), command for command as the doc's drill: `make run-sharded`, writers through
its router, `make backup-cluster` during the writes (the rebalancer stopped on both
masters, each master backed up, the rebalancer running again after), `make
restore-check`, then `make restore-cluster`, whose `make run-sharded` router serves
every message acknowledged before the cut began, with its id, nothing twice, and
every bucket active on exactly one replica set.

Needs vshard (VSHARD_DIR or the Lua path); skips itself without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import types
import uuid
from pathlib import Path

import tarantool

from dialogs_api import ID, TEXT, message_id_of, server_key, walk_dialog
from harness import DEFAULT_PASSWORD, REPLICATION_PASSWORD, admin_eval, free_port, wait_until
from sharded import needs_vshard
from test_backup import COMMAND_TIMEOUT_S, Writer, make_cmd

pytestmark = needs_vshard

WRITERS = 10
ACKED_BEFORE_BACKUP = 300
LOAD_WAIT_S = 120
BUCKET_COUNT = 3000  # scripts/run-sharded's (vshard's default)
# scripts/run-sharded's storages: the router's port plus these.
STORAGE_PORT_OFFSETS = (10, 11, 20, 21)
MASTERS = ("s1-master", "s2-master")
START_TIMEOUT_S = 120


def run_sharded_port() -> int:
    """A router port whose storage ports (PORT+10.. PORT+21) are free too."""
    while True:
        port = free_port()
        if port <= 65514 and all(_free(port + d) for d in STORAGE_PORT_OFFSETS):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def console(data: Path, name: str):
    """What harness.admin_eval needs of a server: its name and console socket."""
    return types.SimpleNamespace(name=name, env={
        "DIALOGS_ADMIN_SOCKET": str(data / name / "tarantool.control")})


class Cluster:
    """`make TARGET ...` running scripts/run-sharded in a process group of its own."""

    def __init__(self, target: str, env: dict, log: Path, **variables):
        self.log = log
        self.out = open(log, "wb")
        self.proc = subprocess.Popen(make_cmd(target, **variables), env=env,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def serving(self, port: int) -> tarantool.Connection:
        def attempt():
            assert self.proc.poll() is None, self.log.read_text()
            try:
                c = tarantool.Connection("127.0.0.1", port, user="dialogs",
                                         password=DEFAULT_PASSWORD, reconnect_max_attempts=0,
                                         connection_timeout=1, socket_timeout=30)
                c.call("new_dialog", [None, str(uuid.uuid4()), str(uuid.uuid4()), "probe"])
                return c
            except (tarantool.error.NetworkError, tarantool.error.DatabaseError):
                return None
        return wait_until(attempt, START_TIMEOUT_S, "the router to serve")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)
        self.out.close()


def active_buckets(data: Path) -> dict:
    return {name: admin_eval(console(data, name), "(function() local out = {} for _, t in "
                             "box.space._bucket.index.status:pairs({'active'}) do "
                             "table.insert(out, t[1]) end return out end)()")
            for name in MASTERS}


def test_a_sharded_cut_under_writes_restores_every_bucket_once(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="dlg-shbk-"))  # short: console socket paths
    port = run_sharded_port()
    env = {**os.environ, "DIALOGS_LISTEN": f"127.0.0.1:{port}",
           "DIALOGS_PASSWORD": DEFAULT_PASSWORD,
           "DIALOGS_REPLICATION_PASSWORD": REPLICATION_PASSWORD}
    live_data, restored_data, dest = base / "live", base / "restored", base / "backup"
    router = types.SimpleNamespace(host="127.0.0.1", port=port, user="dialogs",
                                   password=DEFAULT_PASSWORD)
    live = Cluster("run-sharded", env, tmp_path / "live.log", DIALOGS_DATA_DIR=live_data)
    restored = None
    try:
        live.serving(port).close()
        stop = threading.Event()
        writers = [Writer(router, n, stop) for n in range(WRITERS)]
        for w in writers:
            w.start()
        try:
            wait_until(lambda: sum(len(w.acked) for w in writers) >= ACKED_BEFORE_BACKUP
                       or any(w.error for w in writers), LOAD_WAIT_S, "the load")
            began = time.monotonic()
            took = subprocess.run(make_cmd("backup-cluster", DEST=dest,
                                           SHARDED_DATA_DIR=live_data),
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        finally:
            stop.set()
            for w in writers:
                w.join(60)
        assert took.returncode == 0, took.stdout + took.stderr
        assert all(w.error is None for w in writers), [w.error for w in writers if w.error]
        # The rebalancer runs again on both masters.
        for name in MASTERS:
            assert admin_eval(console(live_data, name),
                              "vshard.storage.internal.is_rebalancer_active") is True
        manifest = json.loads((dest / "cluster.json").read_text())
        assert manifest["complete"] is True and manifest["bucket_count"] == BUCKET_COUNT
        listed = [b for rs in manifest["replicasets"] for b in rs["buckets"]]
        assert sorted(listed) == list(range(1, BUCKET_COUNT + 1))
        assert [rs["name"] for rs in manifest["replicasets"]] == ["s1", "s2"]
        live.stop()

        checked = subprocess.run(make_cmd("restore-check", BACKUP=dest), capture_output=True,
                                 text=True, timeout=COMMAND_TIMEOUT_S)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "each once" in checked.stdout
        restored = Cluster("restore-cluster", env, tmp_path / "restored.log", BACKUP=dest,
                           DIALOGS_DATA_DIR=restored_data)
        conn = restored.serving(port)
        active = active_buckets(restored_data)
        assert sorted(active["s1-master"] + active["s2-master"]) == \
            list(range(1, BUCKET_COUNT + 1))
        assert {rs["name"]: sorted(rs["buckets"]) for rs in manifest["replicasets"]} == \
            {"s1": sorted(active["s1-master"]), "s2": sorted(active["s2-master"])}
        n_before = 0
        for w in writers:
            rows = [r for page in walk_dialog(conn, w.dialog, 1000) for r in page]
            by_text = {}
            for r in rows:
                assert r[TEXT] not in by_text, f"stored twice: {r[TEXT]!r}"
                by_text[r[TEXT]] = str(r[ID])
            assert set(by_text) <= w.sent
            for text, msg_id, at in w.acked:
                if at < began:
                    assert by_text.get(text) == msg_id, f"{text!r} ({msg_id}) not restored"
                    n_before += 1
            last = max(uuid.UUID(i) for i in by_text.values())
            data = conn.call("new_dialog", [str(w.dialog), str(w.a), str(w.b), "after"]).data
            assert uuid.UUID(message_id_of(server_key(conn), data)) > last
        assert n_before >= ACKED_BEFORE_BACKUP
        print(f"\n[sharded cut] acked_before={n_before} "
              f"buckets={[len(rs['buckets']) for rs in manifest['replicasets']]}")
    finally:
        live.stop()
        if restored is not None:
            restored.stop()
        shutil.rmtree(base, ignore_errors=True)
