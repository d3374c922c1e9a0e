"""The `dialogs` role under Tarantool 3's own configuration (docs/operations.md,
"Tarantool 3: configuration and the `dialogs` role").

Real servers started from the shipped files (config/single.yaml,
config/replicaset-manual.yaml; only their ports changed): the report's client is
served, a bad roles_cfg is refused naming the key, a configuration reload changes
nothing that was right, and an instance that is not the leader never writes the
store's schema. Skipped, with the reason, on a server without the `config` module.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest
import tarantool

from config_harness import TARANTOOL, Cluster, has_config_module, no_config_reason
from conftest import forget_logs_of, report_logs_of
from dialogs_api import derived_dialog_id, get_dialog, new_dialog, new_user
from harness import REPO_ROOT, admin_eval, module_built, wait_until

pytestmark = [
    pytest.mark.skipif(not module_built(), reason="run `make build` first"),
    pytest.mark.skipif(not has_config_module(), reason=no_config_reason()),
]

ER_ACCESS_DENIED = 42
SET_UP_LINE = "dialogs: set up as the writable instance"
READ_ONLY_LINE = "dialogs: read-only for now"


@pytest.fixture
def clusters():
    made = []

    def make(config_file: str, **kwargs) -> Cluster:
        c = Cluster(config_file, on_server=report_logs_of, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.remove()
        forget_logs_of(c.servers.values())


def reload_config(srv) -> None:
    admin_eval(srv, "require('config'):reload()")


def console(srv, lua: str) -> str:
    """scripts/console SOCKET LUA, run by the server under test; its reply."""
    out = subprocess.run([TARANTOOL, str(REPO_ROOT / "scripts" / "console"), str(srv.console),
                          lua], capture_output=True, text=True, timeout=90,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"scripts/console {lua}: {out.stdout}{out.stderr}"
    return out.stdout


def wait_queue_owner(srv) -> None:
    """The role of a synchronous replica set without election takes the queue once
    the quorum is connected (a write before that is refused with 227)."""
    wait_until(lambda: admin_eval(srv, "box.info.synchro.queue.owner == box.info.id"), 30,
               f"{srv.name} owns the synchronous queue")


def role_fibers(srv) -> int:
    return admin_eval(srv, "(function() local n = 0 for _, f in pairs(require('fiber').info()) "
                           "do if f.name == 'dialogs.role' then n = n + 1 end end "
                           "return n end)()")


def test_single_config_serves_the_report_client(clusters):
    srv = clusters("single.yaml").server("dialogs").start()
    conn = srv.connect()
    alice, bob = str(new_user()), str(new_user())
    # The report's client: string uuids, data[0] is the id / the list of messages.
    reply = conn.call("new_dialog", (None, alice, bob, "hi Bob"))
    msg_id = reply.data[0]
    assert isinstance(msg_id, str) and str(uuid.UUID(msg_id)) == msg_id, reply.data
    dialog = str(derived_dialog_id(uuid.UUID(alice), uuid.UUID(bob)))
    messages = conn.call("get_dialog", (dialog,)).data[0]
    assert [(str(m[0]), m[4]) for m in messages] == [(msg_id, "hi Bob")], messages
    # The application user executes the two procedures and nothing else; guest nothing.
    with pytest.raises(tarantool.error.DatabaseError) as e:
        conn.eval("return 1")
    assert e.value.args[0] == ER_ACCESS_DENIED
    # The space is not even visible to it (the connector cannot resolve the name),
    # and calling its Lua methods is refused.
    with pytest.raises(tarantool.error.SchemaError):
        conn.select("dialogs")
    with pytest.raises(tarantool.error.DatabaseError) as e:
        conn.call("box.space.dialogs:select")
    assert e.value.args[0] == ER_ACCESS_DENIED
    guest = srv.connect(user=None, password=None)
    with pytest.raises(tarantool.error.DatabaseError) as e:
        guest.call("get_dialog", (dialog,))
    assert e.value.args[0] == ER_ACCESS_DENIED
    # The functions are the role's setuid C functions, the public role restricted.
    assert admin_eval(srv, "{box.func.new_dialog.language, box.func.new_dialog.setuid, "
                           "box.func.get_dialog.language, box.func.get_dialog.setuid}") \
        == ["C", True, "C", True]
    assert admin_eval(srv, "(function() for _, p in ipairs(box.schema.role.info('public')) "
                           "do if (p[3] == 'LUA' and p[1]:find('execute')) or ((p[3] == "
                           "'_truncate' or p[3] == '_collation') and p[1]:find('write')) "
                           "then return p end end return 'restricted' end)()") == "restricted"
    assert SET_UP_LINE in srv.log_of_run()
    assert srv.password not in srv.log_text()


@pytest.mark.parametrize("line, key, message", [
    ("request_ttl: 604800", "request_ttl: -5", "roles_cfg.dialogs.request_ttl: expected a "
     "positive number of seconds, got \"-5\""),
    ("user: dialogs", "user: chat", "roles_cfg.dialogs.user: user \"chat\" is not declared "
     "under credentials.users"),
    ("request_ttl: 604800", "request_tll: 60", "roles_cfg.dialogs.request_tll: unknown "
     "setting"),
])
def test_bad_roles_cfg_is_refused_naming_the_key(clusters, line, key, message):
    c = clusters("single.yaml", edit=lambda t: t.replace(line, key, 1))
    assert key in c.text
    srv = c.server("dialogs")
    out = srv.run_to_exit()
    assert out.returncode != 0
    assert f"Wrong config for role dialogs: dialogs: {message}" in out.stdout + out.stderr


def test_bad_roles_cfg_on_reload_is_refused_and_the_store_keeps_serving(clusters):
    c = clusters("single.yaml")
    srv = c.server("dialogs").start()
    conn = srv.connect()
    a, b = new_user(), new_user()
    first = new_dialog(conn, None, str(a), str(b), "before")
    c.write(c.text.replace("request_ttl: 604800", "request_ttl: 0"))
    with pytest.raises(RuntimeError) as e:
        reload_config(srv)
    assert "dialogs: roles_cfg.dialogs.request_ttl: expected a positive number" in str(e.value)
    second = new_dialog(conn, None, str(a), str(b), "after")
    assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == [first, second]


def test_reload_is_harmless(clusters):
    c = clusters("single.yaml")
    srv = c.server("dialogs").start()
    conn = srv.connect()
    a, b = new_user(), new_user()
    ids = [new_dialog(conn, None, str(a), str(b), f"m{i}") for i in range(3)]
    before = admin_eval(srv, "{box.func.new_dialog.id, box.func.get_dialog.id, "
                             "box.space._schema:get{'dialogs_schema_version'}[2], "
                             "box.space.dialogs:len()}")
    assert role_fibers(srv) == 1
    # The same file again, then a changed setting of the role.
    reload_config(srv)
    c.write(c.text.replace("request_ttl: 604800", "request_ttl: 86400"))
    reload_config(srv)
    assert admin_eval(srv, "require('config'):get('roles_cfg').dialogs.request_ttl") == 86400
    after = admin_eval(srv, "{box.func.new_dialog.id, box.func.get_dialog.id, "
                            "box.space._schema:get{'dialogs_schema_version'}[2], "
                            "box.space.dialogs:len()}")
    assert after == before
    assert role_fibers(srv) == 1
    assert srv.log_errors() == []
    ids.append(new_dialog(conn, None, str(a), str(b), "after the reloads"))
    assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == ids
    # The application user still executes both procedures and nothing else.
    with pytest.raises(tarantool.error.DatabaseError) as e:
        conn.eval("return 1")
    assert e.value.args[0] == ER_ACCESS_DENIED


def test_replicas_never_write_the_schema_and_the_leader_serves(clusters):
    c = clusters("replicaset-manual.yaml")
    servers = [c.server(n) for n in ("dialogs-a", "dialogs-b", "dialogs-c")]
    # Replicas first: they wait for the leader, and must not try to set anything up.
    for s in servers[1:]:
        s.start(wait=False)
    servers[0].start()
    for s in servers[1:]:
        s.wait_ready()
    leader, replicas = servers[0], servers[1:]
    wait_queue_owner(leader)
    conn = leader.connect()
    a, b = new_user(), new_user()
    ids = [new_dialog(conn, None, str(a), str(b), f"m{i}") for i in range(3)]
    dialog = derived_dialog_id(a, b)
    for r in replicas:
        rc = r.connect()
        wait_until(lambda: [str(t[0]) for t in get_dialog(rc, dialog)] == ids, 15,
                   f"{r.name} has the messages")
        assert admin_eval(r, "box.info.ro") is True
        # Nothing was written by the replica itself: its own vclock component is 0.
        assert admin_eval(r, "box.info.vclock[box.info.id] or 0") == 0
        log = r.log_of_run()
        assert READ_ONLY_LINE in log and SET_UP_LINE not in log
        # Errors other than the replication links' own while the set forms (an
        # applier tries peers before they listen or before the replication user
        # exists; a relay sees a peer reconnect).
        assert [e for e in r.log_errors() if "applier" not in e and "relay" not in e.lower()
                ] == []
    assert SET_UP_LINE in leader.log_of_run()
    # The synchronous spaces, the queue taken by the leader's role.
    assert admin_eval(leader, "box.space.dialogs.is_sync") is True
    assert "dialogs: this instance owns the synchronous queue" in leader.log_of_run()


def test_manual_switchover_as_readme_shows_it(clusters):
    c = clusters("replicaset-manual.yaml")
    servers = {n: c.server(n) for n in ("dialogs-a", "dialogs-b", "dialogs-c")}
    for s in servers.values():
        s.start(wait=False)
    for s in servers.values():
        s.wait_ready()
    wait_queue_owner(servers["dialogs-a"])
    a_conn = servers["dialogs-a"].connect()
    u1, u2 = new_user(), new_user()
    ids = [new_dialog(a_conn, None, str(u1), str(u2), "on a")]
    b = servers["dialogs-b"]
    wait_until(lambda: admin_eval(b, "box.space.dialogs:len()") == 1, 15, "b has it")
    # docs/operations.md: change leader:, reload every instance, box.ctl.promote() on the new
    # one, with scripts/console as the docs show it.
    c.write(c.text.replace("leader: dialogs-a", "leader: dialogs-b"))
    for s in servers.values():
        console(s, "require('config'):reload()")
    console(b, "box.ctl.promote()")
    assert admin_eval(servers["dialogs-a"], "box.info.ro") is True
    assert admin_eval(b, "box.info.ro") is False
    b_conn = b.connect()
    ids.append(new_dialog(b_conn, None, str(u1), str(u2), "on b"))
    assert [str(t[0]) for t in get_dialog(b_conn, derived_dialog_id(u1, u2))] == ids
    wait_until(lambda: SET_UP_LINE in b.log_of_run(), 15, "the role set up the new leader")
    a_conn = servers["dialogs-a"].connect()
    wait_until(lambda: [str(t[0]) for t in get_dialog(a_conn, derived_dialog_id(u1, u2))]
               == ids, 15, "the old leader follows")


def test_a_missing_password_variable_stops_the_start(clusters):
    srv = clusters("single.yaml").server("dialogs", env={"DIALOGS_PASSWORD": None})
    out = srv.run_to_exit()
    assert out.returncode != 0
    assert "DIALOGS_PASSWORD" in out.stdout + out.stderr


def test_removing_the_role_stops_its_fibers_and_keeps_data_and_functions(clusters):
    c = clusters("single.yaml")
    srv = c.server("dialogs").start()
    conn = srv.connect()
    a, b = new_user(), new_user()
    first = new_dialog(conn, None, str(a), str(b), "kept")
    fibers = ("(function() local n = {} for _, f in pairs(require('fiber').info()) do "
              "if f.name:find('^dialogs%.') then table.insert(n, f.name) end end "
              "table.sort(n) return n end)()")
    assert admin_eval(srv, fibers) == ["dialogs.request_expiry", "dialogs.role"]
    c.write(c.text.replace("roles: [dialogs]", "roles: []"))
    reload_config(srv)
    assert admin_eval(srv, fibers) == []
    # The store stays as it was: data, functions, grants; the procedures still serve.
    second = new_dialog(conn, None, str(a), str(b), "after stop")
    assert [str(t[0]) for t in get_dialog(conn, derived_dialog_id(a, b))] == [first, second]
    # And the role comes back on the same data.
    c.write(c.text.replace("roles: []", "roles: [dialogs]"))
    reload_config(srv)
    assert admin_eval(srv, fibers) == ["dialogs.request_expiry", "dialogs.role"]
    assert srv.log_errors() == []
