"""Hot reload under load (issue 4, point 7).

Writers and readers keep calls in flight (wal_mode fsync, so a new_dialog spends its
time suspended inside the module, waiting for the disk) while an operator installs a
new build with scripts/install-lib.sh and runs box.schema.func.reload for both
procedures, several times over. Not one call may fail; ids stay strictly increasing;
every acknowledged message is stored; and after each reload the process maps the new
build and, once the calls that were running in the old code have returned, no longer
the old one (docs/operations.md, "Upgrading the module without a restart": the old copy is unloaded after its last call).

The "new build" is the built module with n + 1 zero bytes appended: another file,
as loadable as the original (the dynamic loader ignores trailing bytes), whose size
says which build the server loaded. Tarantool (2.x) does not map the installed file:
each load copies it to a private temporary file first, so what keeps a load or a
reload from reading a half-written library is install-lib.sh's rename into place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import tarantool

from admin import remove_socket_dir, start_admin_server
from dialogs_api import ID, message_id_of, server_key, walk_dialog
from harness import REPO_ROOT, lib_dir, wait_until

INSTALL = REPO_ROOT / "scripts" / "install-lib.sh"
RELOADS = 8
WRITERS = 6
READERS = 2
# How long the old build may stay mapped after a reload: until the calls running
# in it return (a write waiting for its fsync: milliseconds; generous for CI).
UNLOAD_TIMEOUT_S = 10.0
# How long the load may take to make its calls (a bounded wait for an event).
LOAD_WAIT_S = 30.0
PROCS = ("new_dialog", "get_dialog")
# Every name init.lua defines a C function under (the load calls PROCS only).
INSTALLED = PROCS + ("list_dialogs", "mark_read", "dialogs_inbox_build")


def install(build: Path, into: Path) -> None:
    subprocess.run([str(INSTALL), str(build), str(into), *INSTALLED], check=True, timeout=60)


def mapped_module_sizes(pid: int) -> dict:
    """Procedure name -> sizes of the module files the process maps for it.

    Tarantool does not map the installed file: it copies it to a fresh temporary
    file per load (/tmp/tntXXXXXX/new_dialog.so), loads that and deletes it. The size
    of that copy, read through /proc/PID/map_files, tells which build it was."""
    out: dict = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        name = Path(parts[5]).name
        if name in ("new_dialog.so", "get_dialog.so", "libdialogs.so"):
            try:
                size = os.stat(f"/proc/{pid}/map_files/{parts[0]}").st_size
            except OSError:
                continue
            out.setdefault(name[:-3], set()).add(size)
    return out


class Load(threading.Thread):
    def __init__(self, srv, write: bool, stop: threading.Event):
        super().__init__(daemon=True)
        self.srv, self.write, self.stop_flag = srv, write, stop
        self.dialog, self.a, self.b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        self.ids: list = []
        self.calls = 0
        self.failures: list = []

    def run(self):
        conn = tarantool.Connection(self.srv.host, self.srv.port, user=self.srv.user,
                                    password=self.srv.password, reconnect_max_attempts=0,
                                    connection_timeout=5, socket_timeout=30)
        try:
            while not self.stop_flag.is_set():
                try:
                    if self.write:
                        data = conn.call("new_dialog", [str(self.dialog), str(self.a), str(self.b),
                                                        f"m{len(self.ids)}"]).data
                        self.ids.append(message_id_of(server_key(conn), data))
                    else:
                        conn.call("get_dialog", [str(uuid.uuid4()), {"limit": 10}])
                    self.calls += 1
                except Exception as e:  # every failure counts, of any kind
                    self.failures.append(repr(e))
                    if isinstance(e, tarantool.error.NetworkError):
                        return
        finally:
            conn.close()


def test_reload_under_load_fails_no_call(make_server, tmp_path):
    lib = tmp_path / "lib"
    built = lib_dir() / "libdialogs.so"
    install(built, lib)
    srv, admin = start_admin_server(make_server, "reload", wal_mode="fsync",
                                    env={"DIALOGS_LIB_DIR": str(lib)})
    stop = threading.Event()
    load = [Load(srv, True, stop) for _ in range(WRITERS)] + \
           [Load(srv, False, stop) for _ in range(READERS)]
    for t in load:
        t.start()
    wait_until(lambda: all(t.calls > 0 for t in load), LOAD_WAIT_S,
               "every load thread's first call")
    base_size = built.stat().st_size
    before = mapped_module_sizes(srv.pid)
    assert before == {"new_dialog": {base_size}, "get_dialog": {base_size}}, before
    in_flight_at_reload = []
    for n in range(RELOADS):
        build = tmp_path / f"build-{n}.so"
        shutil.copyfile(built, build)
        with open(build, "ab") as f:
            f.write(b"\0" * (n + 1))  # build n is n + 1 bytes longer
        install(build, lib)
        calls_before = sum(t.calls for t in load)
        # Both reloads in one console line: the calls keep running around them.
        reply = admin.run("box.schema.func.reload('new_dialog') "
                          "box.schema.func.reload('get_dialog') return 'reloaded'")
        assert "reloaded" in reply and "error" not in reply, reply
        old_size, new_size = base_size + n, base_size + n + 1
        mapped = mapped_module_sizes(srv.pid)
        for proc in PROCS:
            assert new_size in mapped.get(proc, ()), (n, mapped)
        # The old build goes away: each procedure maps exactly the new one.
        only_new = {proc: {new_size} for proc in PROCS}
        wait_until(lambda: mapped_module_sizes(srv.pid) == only_new, UNLOAD_TIMEOUT_S,
                   f"reload {n}: only the new build ({new_size} bytes) mapped, "
                   f"the old one ({old_size} bytes) gone")
        # Calls go on through the reload, into the new build.
        wait_until(lambda: sum(t.calls for t in load) > calls_before, LOAD_WAIT_S,
                   f"reload {n}: calls after it")
        in_flight_at_reload.append(sum(t.calls for t in load) - calls_before)
    stop.set()
    for t in load:
        t.join(30)
    failures = [f for t in load for f in t.failures]
    assert failures == [], failures[:5]
    assert all(n > 0 for n in in_flight_at_reload), in_flight_at_reload
    assert srv.is_running()
    last = {proc: {base_size + RELOADS} for proc in PROCS}
    assert mapped_module_sizes(srv.pid) == last, (mapped_module_sizes(srv.pid), last)

    conn = srv.connect()
    for t in load:
        if not t.write:
            continue
        assert len(t.ids) > 0
        assert [uuid.UUID(i) for i in t.ids] == sorted(uuid.UUID(i) for i in t.ids)
        stored = [str(r[ID]) for page in walk_dialog(conn, t.dialog, 1000) for r in page]
        assert stored == t.ids
    total = sum(t.calls for t in load)
    print(f"\n[reload] reloads={RELOADS} calls={total} failed=0 "
          f"calls_during_each_reload_window={in_flight_at_reload} "
          f"mapped_after={mapped_module_sizes(srv.pid)} (base {base_size})")
    assert srv.log_errors() == []
    remove_socket_dir(srv)
