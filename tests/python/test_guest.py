"""Guest, only by choice (docs/operations.md, "Guest access"): without DIALOGS_GUEST guest may do
nothing; with DIALOGS_GUEST=execute it may call new_dialog and get_dialog and nothing
else (no read, no write, no eval, no other function), every such start says so in
the log, and a start without it takes the grants back. The same through `make run`
on the road the server has (Tarantool 3: roles_cfg.dialogs.guest), on a router of
the sharded store and through `make run-sharded` (with vshard)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import tarantool

import config_harness
from config_harness import has_config_module
from dialogs_api import TEXT, get_dialog, new_dialog, new_user
from harness import admin_eval, module_built, replica_set, run_init_expecting_exit, wait_until
from sharded import make_cluster, needs_vshard  # noqa: F401 (a fixture)

ACCESS_DENIED = 42
EXECUTE = {"DIALOGS_GUEST": "execute"}


def warning(setting: str) -> str:
    """What every start with guest access logs, `setting` naming the setting."""
    return (f"dialogs: {setting} is execute: guest (anyone who can connect, no password) "
            "may call new_dialog and get_dialog, and nothing else: no read, no write, no "
            "eval")


def revoked(setting: str) -> str:
    """What the first start without it logs."""
    return f"dialogs: revoked guest's execute on new_dialog and get_dialog ({setting} is none)"


WARNING = warning("DIALOGS_GUEST")
REVOKED = revoked("DIALOGS_GUEST")
# What Tarantool gives guest itself, and what the choice adds to it.
GUEST_DEFAULTS = [("execute", "role", "public"), ("session,usage", "universe", "")]
GUEST_EXECUTES = GUEST_DEFAULTS + [("execute", "function", "new_dialog"),
                                   ("execute", "function", "get_dialog")]


@pytest.fixture
def sock_dir():
    """A short directory for admin sockets (unix socket paths are short)."""
    d = Path(tempfile.mkdtemp(prefix="dlg-guest-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def guest_grants(srv) -> list:
    return sorted(map(tuple, admin_eval(srv, "box.schema.user.info('guest')")))


def said_anything_of_guest(srv) -> bool:
    """Whether this run logged the warning of guest access or a revoke."""
    log = srv.log_of_run()
    return WARNING in log or "revoked guest's" in log


def denied(fn, what: str) -> str:
    """`fn()` must come back as an access error (not succeed, not drop the line)."""
    with pytest.raises(tarantool.error.DatabaseError) as info:
        fn()
    err = info.value
    assert not isinstance(err, tarantool.error.NetworkError), f"{what}: {err!r}"
    assert err.code == ACCESS_DENIED, f"{what}: {err.code} {err.message}"
    assert "guest" in err.message, f"{what}: {err.message}"
    return err.message


def assert_guest_refused(srv) -> None:
    guest = srv.connect(user=None, password=None)
    denied(lambda: guest.call("new_dialog", [None, str(new_user()), str(new_user()), "hi"]),
           "new_dialog")
    denied(lambda: guest.call("get_dialog", [str(new_user())]), "get_dialog")


def assert_guest_served(srv, app) -> None:
    """guest writes and reads a dialog; the application user sees the same."""
    guest = srv.connect(user=None, password=None)
    dialog, a, b = new_user(), new_user(), new_user()
    first = new_dialog(guest, dialog, a, b, "from guest")
    new_dialog(app, dialog, b, a, "from the app")
    assert [r[TEXT] for r in get_dialog(guest, dialog)] == ["from guest", "from the app"]
    assert [str(r[0]) for r in get_dialog(app, dialog)][:1] == [str(first)]


def assert_guest_does_nothing_else(srv, space_id=None, functions=()) -> None:
    """No code, no function but the two, and, where the store keeps its data (the
    space `space_id`), no read and no write: each refused for access."""
    guest = srv.connect(user=None, password=None)
    if space_id is not None:
        # By id: guest cannot see the space's name (_vspace hides it).
        row = [str(new_user()), str(new_user()), str(new_user()), str(new_user()), "x", 0]
        denied(lambda: guest.select(space_id), "select")
        denied(lambda: guest.insert(space_id, row), "insert")
        denied(lambda: guest.replace(space_id, row), "replace")
        denied(lambda: guest.delete(space_id, [row[0]]), "delete")
        denied(lambda: guest.execute('SELECT COUNT(*) FROM "dialogs"'), "SQL select")
    denied(lambda: guest.eval("return box.space.dialogs:count()"), "eval")
    # (Tarantool's 'public' role, which every user holds, may call
    # box.schema.user.info, which shows the caller's own grants: not the store's.)
    for fn, args in [("box.space.dialogs:select", []), ("box.snapshot", []),
                     ("box.schema.user.grant", ["guest", "read", "universe"]),
                     ("box.session.su", ["admin"]), ("os.getenv", ["DIALOGS_PASSWORD"]),
                     *((f, []) for f in functions)]:
        denied(lambda: guest.call(fn, args), fn)


def test_guest_is_refused_without_the_choice(make_server, sock_dir):
    srv = make_server(env={"DIALOGS_ADMIN_SOCKET": str(sock_dir / "a.sock")})
    assert_guest_refused(srv)
    assert guest_grants(srv) == sorted(GUEST_DEFAULTS)
    assert not said_anything_of_guest(srv)


def test_guest_calls_the_procedures_and_nothing_else(make_server, sock_dir):
    srv = make_server(env={**EXECUTE, "DIALOGS_ADMIN_SOCKET": str(sock_dir / "a.sock")})
    assert srv.log_of_run().count(WARNING) == 1, srv.log_of_run()
    app = srv.connect()
    assert_guest_served(srv, app)
    assert guest_grants(srv) == sorted(GUEST_EXECUTES)
    assert_guest_does_nothing_else(srv, admin_eval(srv, "box.space.dialogs.id"))
    # Nothing guest tried reached the data.
    assert admin_eval(srv, "box.space.dialogs:len()") == 2


def test_turning_the_choice_off_takes_the_grants_back(make_server, sock_dir):
    srv = make_server(env={**EXECUTE, "DIALOGS_ADMIN_SOCKET": str(sock_dir / "a.sock")})
    assert_guest_served(srv, srv.connect())
    srv.stop()
    srv.env["DIALOGS_GUEST"] = None
    srv.start()
    assert REVOKED in srv.log_of_run() and WARNING not in srv.log_of_run()
    assert guest_grants(srv) == sorted(GUEST_DEFAULTS)
    assert_guest_refused(srv)
    # Said once, when there was something to take back.
    srv.stop()
    srv.env["DIALOGS_GUEST"] = "none"
    srv.start()
    assert not said_anything_of_guest(srv)
    assert_guest_refused(srv)
    # And given again on the next start that chooses it.
    srv.stop()
    srv.env.update(EXECUTE)
    srv.start()
    assert srv.log_of_run().count(WARNING) == 1
    assert guest_grants(srv) == sorted(GUEST_EXECUTES)
    assert_guest_served(srv, srv.connect())


def test_a_replica_says_what_the_writable_instance_granted(make_server):
    """The grants replicate; a replica whose setting differs says so at its start."""
    master, replica = replica_set(make_server, ["m", "r"], env=EXECUTE)
    replica.env["DIALOGS_GUEST"] = None
    master.start()
    replica.start()
    assert master.log_of_run().count(WARNING) == 1
    assert ("dialogs: DIALOGS_GUEST is none here, but the writable instance granted it: "
            "guest (anyone who can connect, no password) may call new_dialog and get_dialog, "
            "and nothing else: no read, no write, no eval; set it the same on every instance"
            in replica.log_of_run()), replica.log_of_run()
    dialog = new_user()
    new_dialog(master.connect(user=None, password=None), dialog, new_user(), new_user(), "hi")
    guest = replica.connect(user=None, password=None)
    assert [r[TEXT] for r in wait_until(lambda: get_dialog(guest, dialog), 10, "replication")] \
        == ["hi"]
    # The master takes it back; a replica that still asks for it is told it has not.
    master.stop()
    master.env["DIALOGS_GUEST"] = None
    master.start()
    wait_until(lambda: guest_grants(replica) == sorted(GUEST_DEFAULTS), 10, "the revoke")
    replica.stop()
    replica.env.update(EXECUTE)
    replica.start()
    assert ("dialogs: DIALOGS_GUEST is execute, but the writable instance has not granted it "
            "(yet): guest may call nothing here; set it the same on every instance"
            in replica.log_of_run()), replica.log_of_run()
    assert_guest_refused(replica)


@pytest.mark.parametrize("value", ["yes", "true", "read", "EXECUTE", "execute,read"])
def test_other_values_are_refused(tmp_path, value):
    result = run_init_expecting_exit(tmp_path, {"DIALOGS_GUEST": value})
    assert result.returncode != 0
    assert (f'dialogs: DIALOGS_GUEST: expected one of none, execute, got "{value}"'
            in result.stderr), result.stderr + result.stdout
    assert not (tmp_path / "data").exists()


@needs_vshard
def test_a_router_serves_guest_only_by_choice(make_cluster):
    cluster = make_cluster({"s1": 1}, routers=2)
    plain, chosen = cluster.routers
    assert_guest_refused(plain)
    chosen.stop()
    chosen.env.update(EXECUTE)
    chosen.start()
    assert chosen.log_of_run().count(WARNING) == 1
    assert_guest_served(chosen, chosen.connect())
    assert sorted(map(tuple, cluster.eval(chosen, "box.schema.user.info('guest')"))) == \
        sorted(GUEST_EXECUTES)
    # On a router the client functions go to the storages; the check and the
    # storages' entries are not guest's to call.
    assert_guest_does_nothing_else(chosen, functions=["dialogs_route", "dialogs_storage_get",
                                            "dialogs_storage_new", "vshard.router.info",
                                            "vshard.router.callrw"])
    chosen.stop()
    chosen.env["DIALOGS_GUEST"] = None
    chosen.start()
    assert REVOKED in chosen.log_of_run()
    assert_guest_refused(chosen)
    # The storages, which clients never call, gave guest nothing throughout.
    for srv in cluster.storages():
        assert sorted(map(tuple, cluster.eval(srv, "box.schema.user.info('guest')"))) == \
            sorted(GUEST_DEFAULTS), srv.name


def test_make_run_takes_the_choice_on_the_road_the_server_has(tmp_path):
    """scripts/run: DIALOGS_GUEST on 2.x, roles_cfg.dialogs.guest (from the same
    variable) on a server with the declarative configuration."""
    if not module_built():
        pytest.skip("run `make build` first")
    setting = "roles_cfg.dialogs.guest" if has_config_module() else "DIALOGS_GUEST"
    srv = config_harness.run_server(tmp_path, env=EXECUTE)
    try:
        # (On 2.x the server is ready once the application user may call; the
        # start's last lines come a moment later.)
        srv.start()
        wait_until(lambda: warning(setting) in srv.log_of_run(), 30, "the warning")
        assert_guest_served(srv, srv.connect())
        assert_guest_does_nothing_else(srv)
        srv.stop()
        srv.env["DIALOGS_GUEST"] = None
        srv.start()
        wait_until(lambda: revoked(setting) in srv.log_of_run(), 30, "the revoke")
        assert warning(setting) not in srv.log_of_run()
        assert_guest_refused(srv)
    finally:
        srv.stop()


@needs_vshard
def test_make_run_sharded_gives_guest_to_the_router_only(tmp_path):
    from test_sharded_run import (OFFSETS, RUN_SHARDED, free_base_port, nobody_listens,
                                  stop_run_sharded)
    port = free_base_port()
    env = dict(os.environ, DIALOGS_LISTEN=f"127.0.0.1:{port}", DIALOGS_GUEST="execute",
               DIALOGS_DATA_DIR=str(tmp_path / "data"), DIALOGS_PASSWORD="run-sharded-pw")
    out_path = tmp_path / "run-sharded.out"
    with open(out_path, "wb") as log:
        proc = subprocess.Popen([str(RUN_SHARDED)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        out = lambda: out_path.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "the cluster's buckets are in place" in out() or
                   proc.poll() is not None, 120, "the router to bootstrap the buckets",
                   interval=0.2)
        assert proc.poll() is None, out()
        setting = "roles_cfg.dialogs.router.guest" if has_config_module() else "DIALOGS_GUEST"
        wait_until(lambda: warning(setting) in out(), 30, "the router's warning")
        assert out().count(warning(setting)) == 1, out()
        # The report's client, its port changed and nothing else: guest, no password.
        conn = tarantool.connect("127.0.0.1", port)
        dialog, a, b = new_user(), new_user(), new_user()
        new_dialog(conn, dialog, a, b, "as guest")
        messages = wait_until(lambda: get_dialog(conn, dialog), 10, "the message")
        assert [m[TEXT] for m in messages] == ["as guest"]
        conn.close()
        # The storages take no guest.
        for offset in OFFSETS[1:]:
            storage = tarantool.connect("127.0.0.1", port + offset)
            with pytest.raises(tarantool.error.DatabaseError) as e:
                storage.call("get_dialog", [str(dialog)])
            assert e.value.code == ACCESS_DENIED, e.value.message
            storage.close()
    finally:
        stop_run_sharded(proc)
    wait_until(lambda: all(nobody_listens(port + o) for o in OFFSETS), 20,
               "every instance to stop")


@pytest.mark.skipif(not has_config_module(), reason=config_harness.no_config_reason())
def test_credentials_that_give_guest_anything_are_refused(tmp_path):
    """On Tarantool 3 the role alone grants guest (and takes the grant back): the
    report's universe grant, written as credentials, stops the start."""
    grant = ("credentials:\n  users:\n    guest:\n      privileges:\n"
             "        - permissions: [read, write, execute]\n          universe: true\n")
    c = config_harness.Cluster("single.yaml",
                               edit=lambda t: t.replace("credentials:\n  users:\n", grant, 1))
    try:
        assert grant in c.text
        out = c.server("dialogs").run_to_exit()
        assert out.returncode != 0
        assert ("Wrong config for role dialogs: dialogs: credentials.users.guest.privileges: "
                "guest takes no privileges here: what guest may do is roles_cfg.dialogs.guest"
                in out.stdout + out.stderr), out.stdout + out.stderr
    finally:
        c.remove()
