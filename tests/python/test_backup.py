"""Backup and restore (docs/backup.md): scripts/backup through the admin console.

- a backup taken under 50 writing clients, checked, restored by `make restore` (the
  drill of docs/backup.md, command for command) and served: every message
  acknowledged before the backup began is there once with its id, nothing is
  doubled, and new ids go above every id the copy holds;
- kill -9 of the instance during the copy (paused there by
  DIALOGS_TEST_BACKUP_PAUSE_AFTER_FILES): the backup is incomplete, `check` refuses
  it, the live directory is as the server left it;
- a destination that is not empty is refused; a copy that fails midway still
  releases the pin (the next backup starts);
- a backup of an older server (DIALOGS_UPGRADE_FROM, e.g. 2.6) restored onto the
  suite's server, which upgrades it as it does any older data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import tarantool

import config_harness
from dialogs_api import ID, TEXT, message_id_of, new_dialog, server_key, walk_dialog
from harness import (READY_LOG_LINE, REPO_ROOT, admin_eval, free_port, module_built,
                     wait_until)
from test_upgrade import server_on, version_of

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

BACKUP_SCRIPT = REPO_ROOT / "scripts" / "backup"
PAUSE_ENV = "DIALOGS_TEST_BACKUP_PAUSE_AFTER_FILES"
WRITERS = 50
# Messages acknowledged before the backup begins, and how long the writers may
# take to get there (a busy machine).
ACKED_BEFORE_BACKUP = 500
LOAD_WAIT_S = 120
COMMAND_TIMEOUT_S = 300
EXIT_FAILED, EXIT_REFUSED = 1, 3
MIB = 1024 * 1024


def backup_cmd(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """scripts/backup ARGS with the suite's tarantool; its exit status and output."""
    return subprocess.run(["tarantool", str(BACKUP_SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          env={**os.environ, **(env or {})}, **kwargs)


def make_cmd(target: str, env=None, **variables) -> list:
    return ["make", "-s", "--no-print-directory", "-C", str(REPO_ROOT), target,
            *[f"{k}={v}" for k, v in variables.items()]]


@pytest.fixture
def sock_dir():
    # Unix socket paths are limited to about 100 bytes: not under tmp_path.
    d = Path(tempfile.mkdtemp(prefix="dlg-bk-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def admin_server(make_server, sock_dir: Path, name: str, **kwargs):
    srv = make_server(name, start=False, **kwargs)
    srv.env["DIALOGS_ADMIN_SOCKET"] = str(sock_dir / f"{name}.sock")
    return srv.start()


def socket_of(srv) -> str:
    return srv.env["DIALOGS_ADMIN_SOCKET"]


def live_files(data_dir: Path) -> dict:
    """name -> (size, content) of every file in a data directory."""
    return {p.name: (p.stat().st_size, p.read_bytes()) for p in sorted(data_dir.iterdir())
            if p.is_file()}


def fill(srv, n: int, text: str = "seed") -> tuple:
    """n messages in one new dialog: (dialog, ids)."""
    conn = srv.connect()
    dialog, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ids = [new_dialog(conn, str(dialog), str(a), str(b), f"{text} {i}") for i in range(n)]
    conn.close()
    return dialog, ids


def stored(conn, dialog) -> list:
    return [r for page in walk_dialog(conn, dialog, 1000) for r in page]


class Writer(threading.Thread):
    """Stores messages in a dialog of its own until stopped; records each
    acknowledged one with the time of its acknowledgement."""

    def __init__(self, srv, n: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.srv, self.n, self.stop_flag = srv, n, stop
        self.dialog, self.a, self.b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        self.acked: list = []  # (text, id, monotonic time of the reply)
        self.sent: set = set()
        self.error = None

    def run(self):
        try:
            conn = tarantool.Connection(self.srv.host, self.srv.port, user=self.srv.user,
                                        password=self.srv.password,
                                        reconnect_max_attempts=0, connection_timeout=30,
                                        socket_timeout=60)
            i = 0
            while not self.stop_flag.is_set():
                text = f"writer {self.n} message {i}"
                self.sent.add(text)
                data = conn.call("new_dialog", [str(self.dialog), str(self.a), str(self.b),
                                                text]).data
                self.acked.append((text, message_id_of(server_key(conn), data),
                                   time.monotonic()))
                i += 1
            conn.close()
        except Exception as e:  # reported by the test, not lost in the thread
            self.error = e


def test_a_backup_under_50_writers_restores_every_message_acknowledged_before_it(
        make_server, sock_dir, tmp_path):
    srv = admin_server(make_server, sock_dir, "live")
    fill(srv, 300)
    admin_eval(srv, "box.snapshot()")  # a snapshot and WAL after it, both copied
    stop = threading.Event()
    writers = [Writer(srv, n, stop) for n in range(WRITERS)]
    for w in writers:
        w.start()
    try:
        wait_until(lambda: sum(len(w.acked) for w in writers) >= ACKED_BEFORE_BACKUP
                   or any(w.error for w in writers), LOAD_WAIT_S, "the load to be under way")
        began = time.monotonic()
        dest = tmp_path / "backups" / "b1"
        took = subprocess.run(make_cmd("backup", ADMIN_SOCKET=socket_of(srv), DEST=dest),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        during = sum(len(w.acked) for w in writers)
    finally:
        stop.set()
        for w in writers:
            w.join(60)
    assert took.returncode == 0, took.stdout + took.stderr
    assert all(w.error is None for w in writers), [w.error for w in writers if w.error]
    before = {w: [(t, i) for t, i, at in w.acked if at < began] for w in writers}
    n_before = sum(map(len, before.values()))
    assert n_before >= ACKED_BEFORE_BACKUP

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["server_version"] == admin_eval(srv, "box.info.version")
    assert manifest["schema_version"] == admin_eval(
        srv, "box.space._schema:get('dialogs_schema_version')[2]")
    assert manifest["messages"] >= 300 + n_before
    assert sorted(f["name"].rsplit(".", 1)[1] for f in manifest["files"])[-1] == "xlog"
    assert all(int(lsn) > 0 for lsn in manifest["vclock"].values())
    assert manifest["started_at"] <= manifest["finished_at"]
    assert "buckets" not in manifest  # not a storage
    srv.stop()

    # The drill of docs/backup.md.
    checked = subprocess.run(make_cmd("restore-check", BACKUP=dest), capture_output=True,
                             text=True, timeout=COMMAND_TIMEOUT_S)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"backup {dest} matches its manifest" in checked.stdout
    data_dir = tmp_path / "restored-data"
    port = free_port()
    env = {**os.environ, "DIALOGS_LISTEN": f"127.0.0.1:{port}",
           "DIALOGS_PASSWORD": srv.password, "DIALOGS_MEMTX_MEMORY": str(256 * MIB)}
    log = open(tmp_path / "restore.log", "wb")
    proc = subprocess.Popen(make_cmd("restore", BACKUP=dest, DIALOGS_DATA_DIR=data_dir),
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def serving():
            assert proc.poll() is None, (tmp_path / "restore.log").read_text()
            try:
                c = tarantool.Connection("127.0.0.1", port, user=srv.user,
                                         password=srv.password, reconnect_max_attempts=0,
                                         connection_timeout=1, socket_timeout=30)
                c.call("get_dialog", [str(uuid.uuid4())])
                return c
            except (tarantool.error.NetworkError, tarantool.error.DatabaseError):
                return None
        conn = wait_until(serving, COMMAND_TIMEOUT_S, "the restored server to serve")
        present = 0
        held = []
        for w in writers:
            rows = stored(conn, w.dialog)
            by_text = {}
            for r in rows:
                assert r[TEXT] not in by_text, f"stored twice: {r[TEXT]!r}"
                by_text[r[TEXT]] = str(r[ID])
            assert set(by_text) <= w.sent, set(by_text) - w.sent
            for text, msg_id in before[w]:
                assert by_text.get(text) == msg_id, f"{text!r} ({msg_id}) not restored"
                present += 1
            held += [uuid.UUID(i) for i in by_text.values()]
        assert present == n_before
        # New ids go above every id the restored store holds.
        a, b = uuid.uuid4(), uuid.uuid4()
        new_id = uuid.UUID(new_dialog(conn, None, str(a), str(b), "after the restore"))
        assert new_id > max(held)
        conn.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()
    print(f"\n[backup under {WRITERS} writers] acked_before={n_before} "
          f"acked_by_the_end_of_the_backup={during} manifest_messages={manifest['messages']} "
          f"files={len(manifest['files'])}")


def paused_backup(srv, dest: Path, after_files: int) -> subprocess.Popen:
    """scripts/backup take, stopped after `after_files` files until a line on stdin."""
    proc = subprocess.Popen(["tarantool", str(BACKUP_SCRIPT), "take", socket_of(srv),
                             str(dest)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, PAUSE_ENV: str(after_files)})
    out = ""
    while "backup: paused" not in out:
        line = proc.stdout.readline()
        assert line, f"exited before the pause: {out}{proc.stderr.read()}"
        out += line
    return proc


def resume(proc: subprocess.Popen) -> tuple:
    out, err = proc.communicate("\n", timeout=COMMAND_TIMEOUT_S)
    return proc.returncode, out, err


def test_kill_9_during_the_copy_leaves_an_incomplete_backup_and_the_live_dir_as_it_was(
        make_server, sock_dir, tmp_path):
    srv = admin_server(make_server, sock_dir, "killed")
    dialog, ids = fill(srv, 200)
    admin_eval(srv, "box.snapshot()")
    dialog2, ids2 = fill(srv, 200, "after the snapshot")
    dest = tmp_path / "b-killed"
    proc = paused_backup(srv, dest, 1)
    srv.kill()
    live = live_files(srv.data_dir)
    code, out, err = resume(proc)
    assert code == EXIT_FAILED, out + err
    assert "backup incomplete" in err and "box.backup.stop() did not reach the instance" in err
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["error"]
    refused = backup_cmd("check", dest)
    assert refused.returncode == EXIT_FAILED
    assert f"{dest}: the backup is incomplete" in refused.stderr
    assert live_files(srv.data_dir) == live  # nothing written, removed or changed there
    srv.start()
    conn = srv.connect()
    assert [str(r[ID]) for r in stored(conn, dialog)] == ids
    assert [str(r[ID]) for r in stored(conn, dialog2)] == ids2


def test_a_destination_that_is_not_empty_is_refused(make_server, sock_dir, tmp_path):
    srv = admin_server(make_server, sock_dir, "refuse")
    fill(srv, 10)
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "precious").write_text("keep me")
    refused = backup_cmd("take", socket_of(srv), dest)
    assert refused.returncode == EXIT_REFUSED, refused.stdout + refused.stderr
    assert f"DEST {dest} is not empty (1 entries); refusing to write there" in refused.stderr
    assert [p.name for p in dest.iterdir()] == ["precious"]
    assert (dest / "precious").read_text() == "keep me"
    # A file is not a destination either.
    assert backup_cmd("take", socket_of(srv), dest / "precious").returncode == EXIT_REFUSED
    # A restore refuses a data directory that holds anything.
    ok = backup_cmd("take", socket_of(srv), tmp_path / "good")
    assert ok.returncode == 0, ok.stderr
    restored = backup_cmd("restore", tmp_path / "good", dest)
    assert restored.returncode == EXIT_REFUSED
    assert f"DATA_DIR {dest} is not empty" in restored.stderr


def test_a_copy_that_fails_midway_still_releases_the_pin(make_server, sock_dir, tmp_path):
    srv = admin_server(make_server, sock_dir, "fails")
    fill(srv, 100)
    admin_eval(srv, "box.snapshot()")
    fill(srv, 100)
    dest = tmp_path / "b-gone"
    proc = paused_backup(srv, dest, 1)
    # While the backup holds the pin, no other may start.
    assert "Backup is already in progress" in admin_eval(
        srv, "select(2, pcall(box.backup.start))")
    shutil.rmtree(dest)  # the copy's next file cannot be written
    code, out, err = resume(proc)
    assert code == EXIT_FAILED, out + err
    assert "backup incomplete: cannot create" in err, err
    assert "did not reach the instance" not in err
    # Released: the next backup starts, and completes.
    again = backup_cmd("take", socket_of(srv), tmp_path / "b-again")
    assert again.returncode == 0, again.stdout + again.stderr
    assert backup_cmd("check", tmp_path / "b-again").returncode == 0


UPGRADE_FROM = os.environ.get("DIALOGS_UPGRADE_FROM")


def test_a_backup_of_an_older_server_restores_onto_the_suites_server(
        make_server, sock_dir, tmp_path):
    if not UPGRADE_FROM:
        pytest.skip("set DIALOGS_UPGRADE_FROM to an older tarantool binary "
                    "(e.g. /usr/bin/tarantool) to restore its backup onto this server")
    new_version = version_of(shutil.which("tarantool"))
    if version_of(UPGRADE_FROM) == new_version:
        pytest.skip(f"DIALOGS_UPGRADE_FROM is the suite's own server ({new_version})")
    old = admin_server(make_server, sock_dir, "old",
                       env=server_on(tmp_path / "old-bin", UPGRADE_FROM))
    dialog, ids = fill(old, 150)
    admin_eval(old, "box.snapshot()")
    dialog2, ids2 = fill(old, 150, "after the snapshot")
    dest = tmp_path / "b-old"
    took = backup_cmd("take", socket_of(old), dest)
    assert took.returncode == 0, took.stdout + took.stderr
    old.stop()

    new = make_server("new", start=False)
    restored = backup_cmd("restore", dest, new.data_dir)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    new.start()
    wait_until(lambda: READY_LOG_LINE in new.log_of_run(), 60, "init.lua to finish")
    assert "dialogs: box.schema.upgrade() done" in new.log_of_run()
    conn = new.connect()
    assert [str(r[ID]) for r in stored(conn, dialog)] == ids
    assert [str(r[ID]) for r in stored(conn, dialog2)] == ids2
    newer = new_dialog(conn, str(dialog2), str(uuid.uuid4()), str(uuid.uuid4()), "new")
    assert uuid.UUID(newer) > max(uuid.UUID(i) for i in ids + ids2)


def test_the_config_road_is_backed_up_through_its_console_socket(sock_dir):
    if not config_harness.has_config_module():
        pytest.skip(config_harness.no_config_reason())
    live = config_harness.run_server(sock_dir / "live", name="live").start()
    restored = config_harness.run_server(sock_dir / "restored", name="restored")
    try:
        assert Path(socket_of(live)).name == "tarantool.control"
        dialog, ids = fill(live, 200)
        admin_eval(live, "box.snapshot()")
        dialog2, ids2 = fill(live, 200, "after the snapshot")
        dest = sock_dir / "b"
        took = backup_cmd("take", socket_of(live), dest)
        assert took.returncode == 0, took.stdout + took.stderr
        names = [f["name"] for f in json.loads((dest / "manifest.json").read_text())["files"]]
        assert all(n.endswith((".snap", ".xlog")) for n in names), names
        live.stop()
        done = backup_cmd("restore", dest, restored.env["DIALOGS_DATA_DIR"])
        assert done.returncode == 0, done.stdout + done.stderr
        conn = restored.start().connect()
        assert [str(r[ID]) for r in stored(conn, dialog)] == ids
        assert [str(r[ID]) for r in stored(conn, dialog2)] == ids2
    finally:
        live.stop()
        restored.stop()
