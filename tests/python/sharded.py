"""A sharded store under test: storage replica sets and routers, all `init.lua`.

Every member is a harness.Server configured only through the sharding variables a
user sets (docs/operations.md, "Sharding settings"): DIALOGS_SHARDING, the
replication user and password, DIALOGS_READ_ONLY for replicas, DIALOGS_ROUTER for
routers. Each has an admin console (DIALOGS_ADMIN_SOCKET) for what only an operator
does: look into a storage's spaces, move a bucket by hand, promote a replica, give a
running cluster a new topology.

vshard comes from VSHARD_DIR or the Lua path; without it `vshard_missing()` says why
and the sharded tests skip themselves with that reason.

    cluster = make_cluster({"s1": 2, "s2": 1})   # s1: master + replica, s2: master
    conn = cluster.connect()                      # the router, as the application user
    cluster.eval(cluster.master("s1"), "box.space.dialogs:len()")
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import tarantool

import conftest
from harness import (REPLICATION_PASSWORD, REPO_ROOT, Server, ServerError, admin_eval,
                     free_port, wait_until)

# Logged by init.lua once a storage serves, and by a router once the buckets exist.
STORAGE_READY = "dialogs: storage of replica set"
BUCKETS_READY = "dialogs: the cluster's buckets are in place"
REPLICATION_USER = "replicator"
# Short: a first start waits this long for each listed peer that is not up yet.
CONNECT_TIMEOUT_S = "2"
PROMOTE = REPO_ROOT / "scripts" / "promote"
# Where a bucket lives: vshard's _bucket status on the replica set that has it.
ACTIVE = "active"


@functools.lru_cache(maxsize=1)
def vshard_missing() -> Optional[str]:
    """None when init.lua can load vshard here, else why not (the skip reason)."""
    probe = ("local dir = os.getenv('VSHARD_DIR') "
             "if dir ~= nil and dir ~= '' then "
             "package.path = dir .. '/?.lua;' .. dir .. '/?/init.lua;' .. package.path end "
             "os.exit(pcall(require, 'vshard') and 0 or 1)")
    try:
        rc = subprocess.run(["tarantool", "-e", probe], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=30).returncode
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run tarantool to look for vshard: {e}"
    if rc != 0:
        return ("vshard not found: set VSHARD_DIR to a checkout of tarantool/vshard, "
                "or install it (tt rocks install vshard)")
    return None


needs_vshard = pytest.mark.skipif(vshard_missing() is not None,
                                  reason=vshard_missing() or "")


class Storage(Server):
    """A storage instance: ready when init.lua says so and its replication user
    (which routers log in as) can log in. Clients have no account here."""

    def _set_up_done(self) -> bool:
        if STORAGE_READY not in self.log_of_run():
            return False
        conn = tarantool.Connection(self.host, self.port, user=REPLICATION_USER,
                                    password=REPLICATION_PASSWORD, connection_timeout=1,
                                    socket_timeout=1, reconnect_max_attempts=0)
        conn.close()
        return True


class Cluster:
    """Replica sets of Storage servers and routers, not started until `start`."""

    def __init__(self, base_dir: Path, layout: Dict[str, int], routers: int = 1,
                 bucket_count: int = 3000, env: Optional[dict] = None):
        self.base_dir = Path(base_dir)
        self.bucket_count = bucket_count
        self.env = dict(env or {})
        # Unix socket paths are short; tmp_path need not be.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="dlg-sh-"))
        self.replicasets: Dict[str, List[Storage]] = {}
        self.routers: List[Server] = []
        self.all: list = []
        for name, members in layout.items():
            self._plan_replicaset(name, members)
        for i in range(routers):
            self._plan_router(f"router{i}")
        self._set_topology()

    # --- building ---------------------------------------------------------------

    def _common_env(self) -> dict:
        e = {
            "DIALOGS_REPLICATION_PASSWORD": REPLICATION_PASSWORD,
            "DIALOGS_REPLICATION_CONNECT_TIMEOUT": CONNECT_TIMEOUT_S,
            "DIALOGS_BUCKET_COUNT": str(self.bucket_count),
            "VSHARD_DIR": os.environ.get("VSHARD_DIR"),
        }
        e.update(self.env)
        return e

    def _track(self, srv: Server) -> None:
        srv.env["DIALOGS_ADMIN_SOCKET"] = str(self.sock_dir / f"{srv.name}.sock")
        self.all.append(srv)
        conftest._LIVE.append(srv)  # logs in the report of a failing test

    def _plan_replicaset(self, name: str, members: int) -> List[Storage]:
        servers = []
        for i in range(members):
            role = "master" if i == 0 else f"replica{i}"
            env = self._common_env()
            env["DIALOGS_READ_ONLY"] = "false" if i == 0 else "true"
            srv = Storage(self.base_dir / f"{name}-{role}", name=f"{name}-{role}",
                          port=free_port(), env=env)
            self._track(srv)
            servers.append(srv)
        self.replicasets[name] = servers
        return servers

    def _plan_router(self, name: str) -> Server:
        env = self._common_env()
        env["DIALOGS_ROUTER"] = "true"
        srv = Server(self.base_dir / name, name=name, env=env)
        self._track(srv)
        self.routers.append(srv)
        return srv

    def topology(self) -> str:
        return ";".join(f"{name}=" + ",".join(s.listen for s in members)
                        for name, members in self.replicasets.items())

    def _set_topology(self) -> None:
        for srv in self.all:
            srv.env["DIALOGS_SHARDING"] = self.topology()

    # --- running ----------------------------------------------------------------

    def start(self, timeout: float = 60) -> "Cluster":
        """Every storage at once (a replica set's members bootstrap together), then
        the routers; returns once a router has created the buckets."""
        storages = [s for members in self.replicasets.values() for s in members]
        for s in storages:
            s.start(wait=False)
        for s in storages:
            s.wait_ready(timeout)
        for r in self.routers:
            r.start(timeout=timeout)
        wait_until(lambda: any(BUCKETS_READY in r.log_text() for r in self.routers),
                   timeout, "bucket bootstrap")
        return self

    def stop(self) -> None:
        for srv in reversed(self.all):
            srv.stop()
            if srv in conftest._LIVE:
                conftest._LIVE.remove(srv)
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def add_replicaset(self, name: str, members: int, timeout: float = 60) -> None:
        """Start a new replica set with the grown topology, then give it to every
        running storage and router through its console (docs/sharding.md, "Adding a
        replica set"). vshard's rebalancer moves buckets from then on."""
        new = self._plan_replicaset(name, members)
        self._set_topology()
        for s in new:
            s.start(wait=False)
        for s in new:
            s.wait_ready(timeout)
        topology = self.topology()
        for srv in self.all:
            if srv in new or not srv.is_running():
                continue
            module = "dialogs.router" if srv in self.routers else "dialogs.storage"
            self.eval(srv, f"require('{module}').reconfigure('{topology}') or true")

    # --- looking in ---------------------------------------------------------------

    def connect(self, router: int = 0, **kwargs) -> tarantool.Connection:
        return self.routers[router].connect(**kwargs)

    def master(self, name: str) -> Storage:
        return self.replicasets[name][0]

    def storages(self) -> List[Storage]:
        return [s for members in self.replicasets.values() for s in members]

    @staticmethod
    def eval(srv: Server, expr: str, timeout: float = 60):
        return admin_eval(srv, expr, timeout)

    def bucket_counts(self) -> Dict[str, int]:
        """Active buckets per replica set, from each master's _bucket."""
        return {name: self.eval(members[0],
                                "box.space._bucket.index.status:count('active')")
                for name, members in self.replicasets.items()
                if members[0].is_running()}

    def where(self, bucket: int) -> str:
        """The replica set where `bucket` is active (by its masters' _bucket)."""
        for name, members in self.replicasets.items():
            status = self.eval(members[0], f"(box.space._bucket:get{{{bucket}}} or {{}})[2]")
            if status == ACTIVE:
                return name
        raise AssertionError(f"bucket {bucket} is active nowhere")

    def move(self, bucket: int, to: str, timeout: float = 30) -> None:
        """Send `bucket` to replica set `to` by hand (vshard.storage.bucket_send on the
        master that has it)."""
        source = self.master(self.where(bucket))
        self.eval(source, "(function() local ok, err = vshard.storage.bucket_send("
                  f"{bucket}, require('dialogs.sharding').replicaset_uuid('{to}'), "
                  f"{{timeout = {timeout}}}) if not ok then error(tostring(err)) end "
                  "return true end)()", timeout=timeout + 10)

    def rows_of_bucket(self, srv: Server, space: str, bucket: int) -> list:
        """The ids (first field, as strings) of `space`'s rows in `bucket` on `srv`."""
        return self.eval(srv, f"(function() local out = {{}} for _, t in box.space.{space}"
                         f".index.bucket_id:pairs({{{bucket}}}) do table.insert(out, "
                         "tostring(t[1])) end return out end)()")

    def wait_replicated(self, name: str, timeout: float = 30) -> None:
        """Until every running replica of `name` has applied all its master's writes."""
        master, *replicas = self.replicasets[name]
        master_id = self.eval(master, "box.info.id")
        lsn = self.eval(master, "box.info.lsn")
        for r in replicas:
            if r.is_running():
                wait_until(lambda r=r: self.eval(
                    r, f"(box.info.vclock[{master_id}] or 0) >= {lsn}"),
                    timeout, f"{r.name} to catch up with {master.name}")

    def promote(self, srv: Server, timeout: float = 60) -> None:
        """scripts/promote on `srv`'s console: it becomes its replica set's master."""
        out = subprocess.run([str(PROMOTE), srv.env["DIALOGS_ADMIN_SOCKET"]],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise ServerError(f"promote {srv.name}: {out.stdout}\n{out.stderr}")


@pytest.fixture
def make_cluster(tmp_path):
    """Builds and starts clusters; stops every one of them after the test."""
    made = []

    def make(layout: Dict[str, int], start: bool = True, **kwargs) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(made)}", layout, **kwargs)
        made.append(c)
        return c.start() if start else c

    yield make
    for c in made:
        c.stop()


def retrying(fn, codes=(1009, 1010), timeout: float = 30, interval: float = 0.05):
    """`fn()` until it does not fail with a retryable router code (docs/sharding.md, "What a
    client sees"); returns its value and the codes it saw on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(), seen
        except tarantool.error.DatabaseError as e:
            code = e.args[0] if e.args else None
            if code not in codes or time.monotonic() > deadline:
                raise
            seen.append(code)
            time.sleep(interval)


# --- the inbox across replica sets (docs/sharding.md, "The inbox across replica sets") ---

# Seconds the outboxes may take to deliver everything after a load stops.
DRAIN_TIMEOUT_S = 60


def owners(cluster: Cluster) -> Dict[int, str]:
    """bucket -> the replica set where it is active, from every running master's
    _bucket (one console call per replica set)."""
    out: Dict[int, str] = {}
    for name, members in cluster.replicasets.items():
        if not members[0].is_running():
            continue
        for b in cluster.eval(members[0], "(function() local out = {} for _, t in "
                              "box.space._bucket:pairs() do if t.status == 'active' then "
                              "table.insert(out, t.id) end end return out end)()"):
            out[b] = name
    return out


BUILD_LUA = ("(function() local t = box.space._schema:get{'dialogs_inbox_built'} "
             "local after = box.NULL "
             "while not (t and t[2]) do after = box.func.dialogs_inbox_build:call({after, 1000}) "
             "if after == nil then break end end "
             "if package.loaded['dialogs.outbox'] then require('dialogs.outbox').wakeup() end "
             "return true end)()")


def build_inbox(srv: Server) -> None:
    """Makes sure the writable instance `srv` (with an admin socket) has its inbox
    built, as the schema does at start: for data directories whose schema does
    not do it itself yet. Idempotent."""
    admin_eval(srv, BUILD_LUA)


def build_inboxes(cluster: Cluster) -> None:
    """build_inbox on every running storage master (deliveries start only then)."""
    for members in cluster.replicasets.values():
        if members[0].is_running():
            build_inbox(members[0])


def outbox_backlog(cluster: Cluster) -> int:
    """Rows waiting in the outboxes of every running master."""
    return sum(cluster.eval(members[0], "box.space.dialogs_outbox:len()")
               for members in cluster.replicasets.values() if members[0].is_running())


def recount(cluster: Cluster, repair: bool = False, router: int = 0) -> dict:
    """The cluster's recount from a router's console (it waits for the outboxes to
    drain first): {entries, wrong, missing, extra, totals_wrong, backlog, ...}."""
    flag = "true" if repair else "false"
    return cluster.eval(cluster.routers[router],
                        f"require('dialogs.router').recount({{repair = {flag}, "
                        f"timeout = {DRAIN_TIMEOUT_S}}})", timeout=DRAIN_TIMEOUT_S + 60)


def no_drift(report: dict) -> bool:
    return all(report[k] == 0 for k in ("wrong", "missing", "extra", "totals_wrong",
                                         "backlog"))


def list_dialogs(conn, user, opts: Optional[dict] = None) -> dict:
    """list_dialogs' reply, the map, whatever the server's reply shape ([map] where C
    results travel one each, [[map]] where they are wrapped)."""
    args = [str(user)] + ([opts] if opts is not None else [])
    data = conn.call("list_dialogs", args).data
    value = data[0]
    return value[0] if isinstance(value, list) else value


def mark_read(conn, user, dialog, up_to) -> int:
    """mark_read's reply: the dialog's unread count after it."""
    data = conn.call("mark_read", [str(user), str(dialog), str(up_to)]).data
    value = data[0]
    return value[0] if isinstance(value, list) else value


def no_rw_refs_lua(buckets) -> str:
    """Lua (a statement list) that waits, up to 10 s, until no fiber holds a write
    reference on any of `buckets` (the outbox's drainer holds one on a row's bucket
    while it delivers the row). Code placed right after it, with no yield between,
    runs before anything can take one again: e.g. a status set by hand in _bucket,
    which vshard refuses while a bucket has write references."""
    ids = ", ".join(str(b) for b in buckets)
    return ("local fiber = require('fiber') local refs = vshard.storage.internal.bucket_refs "
            "local deadline = fiber.clock() + 10 "
            "while fiber.clock() < deadline do local busy = false "
            f"for _, b in ipairs({{{ids}}}) do "
            "busy = busy or (refs[b] ~= nil and refs[b].rw > 0) end "
            "if not busy then break end fiber.sleep(0.01) end ")
