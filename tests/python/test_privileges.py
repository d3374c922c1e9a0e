"""Access, the gaps test_access.py leaves (issue 4, point 5): the exact grants as the
server holds them; creating anything by every road the protocol offers (Lua calls,
writes into system spaces, SQL); and running code by any road (eval, SQL's LUA()).
Each refusal is checked over the network, and the catalogue is counted by admin
before and after, so a refusal that still changed something is caught too."""

from __future__ import annotations

import pytest
import tarantool

from admin import remove_socket_dir, start_admin_server
from dialogs_api import get_dialog, new_dialog, new_user

ACCESS_DENIED = 42
# System spaces (box.schema.*_ID): the catalogue a client could try to write.
SYSTEM_SPACES = {"_schema": 272, "_collation": 276, "_space": 280, "_sequence": 284,
                 "_index": 288, "_func": 296, "_user": 304, "_priv": 312,
                 "_truncate": 330}
CATALOGUE = ("{box.space._space:len(), box.space._index:len(), box.space._func:len(), "
             "box.space._user:len(), box.space._priv:len(), box.space._collation:len(), "
             "box.space._sequence:len(), box.space._schema:len(), box.space._truncate:len(), "
             "box.space.dialogs:len(), "
             "box.space.dialogs_requests:len()}")


@pytest.fixture
def secured(make_server):
    srv, admin = start_admin_server(make_server, "privileges")
    yield srv, admin
    remove_socket_dir(srv)


def refused(fn, what: str):
    """The call must come back as an error reply (not succeed, not drop the line)."""
    with pytest.raises(tarantool.error.DatabaseError) as info:
        fn()
    err = info.value
    assert not isinstance(err, tarantool.error.NetworkError), f"{what}: {err!r}"
    return err


def test_grants_are_exactly_the_designed_ones(secured):
    srv, admin = secured
    user = srv.user
    got = sorted(map(tuple, admin.eval(f"box.schema.user.info('{user}')")))
    assert got == sorted([
        ("execute", "function", "new_dialog"),
        ("execute", "function", "get_dialog"),
        ("execute", "function", "list_dialogs"),
        ("execute", "function", "mark_read"),
        # What every Tarantool user gets on creation:
        ("execute", "role", "public"),
        ("session,usage", "universe", ""),
        ("alter", "user", user),
    ]), got
    # guest: Tarantool's defaults and nothing more.
    assert sorted(map(tuple, admin.eval("box.schema.user.info('guest')"))) == sorted([
        ("execute", "role", "public"), ("session,usage", "universe", "")])
    assert admin.eval("{box.func.new_dialog.setuid, box.func.new_dialog.language, "
                      "box.func.get_dialog.setuid, box.func.get_dialog.language}") == \
        [True, "C", True, "C"]
    # No role a client holds grants anything on the store's spaces.
    for role in ("public",):
        for priv, kind, name in admin.eval(f"box.schema.role.info('{role}')"):
            assert not (kind == "space" and name.startswith("dialogs")), (role, priv, name)
            assert kind != "universe", (role, priv)


@pytest.mark.parametrize("who", ["guest", "app"])
def test_nobody_but_admin_runs_code(secured, who):
    """eval is refused (test_access.py); so must be every other way to run Lua. On
    Tarantool 2.6 the 'public' role, which every user and guest hold, may execute
    the SQL function LUA(), which runs any Lua text as the caller."""
    srv, admin = secured
    conn = srv.connect(user=None, password=None) if who == "guest" else srv.connect()
    refused(lambda: conn.eval("return 1"), "eval")
    refused(lambda: conn.call("box.session.su", ["admin"]), "su")
    refused(lambda: conn.call("loadstring", ["return 1"]), "loadstring")
    refused(lambda: conn.call("dofile", ["/etc/hostname"]), "dofile")
    refused(lambda: conn.call("os.getenv", ["DIALOGS_PASSWORD"]), "os.getenv")
    err = refused(lambda: conn.execute("SELECT LUA('return os.getenv(''DIALOGS_PASSWORD'')')"),
                  "SQL LUA()")
    assert err.code == ACCESS_DENIED, (err.code, err.message)


@pytest.mark.parametrize("who", ["guest", "app"])
def test_nobody_but_admin_creates_or_changes_anything(secured, who):
    srv, admin = secured
    app = srv.connect()
    dialog = new_user()
    new_dialog(app, dialog, new_user(), new_user(), "before")
    conn = srv.connect(user=None, password=None) if who == "guest" else app
    before = admin.eval(CATALOGUE)

    lua_ddl = [
        ("box.schema.space.create", ["x"]),
        ("box.schema.user.create", ["intruder", {"password": "x"}]),
        ("box.schema.role.create", ["intruders"]),
        ("box.schema.func.create", ["f", {"language": "C"}]),
        ("box.schema.sequence.create", ["s"]),
        ("box.schema.user.grant", ["guest", "read,write,execute", "universe"]),
        ("box.schema.user.passwd", ["admin", "x"]),
        ("box.space.dialogs:truncate", []),
        ("box.space.dialogs:drop", []),
        ("box.snapshot", []),
        ("box.cfg", [{"listen": "0.0.0.0:3301"}]),
    ]
    for fn, args in lua_ddl:
        err = refused(lambda: conn.call(fn, args), fn)
        assert err.code == ACCESS_DENIED, (fn, err.code, err.message)

    # Writes straight into the catalogue, as IPROTO requests. Tarantool's 'public'
    # role may write _collation and _truncate; the store takes that away (README
    # "Configuration", docs/operations.md "Security"), so every one of these is refused for access, and the catalogue
    # count below shows that nothing changed.
    raw = (srv.connect(user=None, password=None, encoding=None) if who == "guest"
           else srv.connect(encoding=None))  # error messages may carry raw msgpack
    rows = {
        "_schema": ["intruder", 1],
        "_collation": [999, "intruder", 1, "ICU", "", {}],
        "_space": [999, 1, "intruder", "memtx", 0, {}, []],
        "_sequence": [999, 1, "intruder", 1, 1, 100, 1, 0, False],
        "_index": [512, 9, "intruder", "tree", {"unique": False}, [[1, "uuid"]]],
        "_func": [999, 1, "intruder", 1, "LUA"],
        "_user": [999, 1, "intruder", "user", {}],
        "_priv": [1, 0, "universe", 0, 7],
        "_truncate": [512, 99],  # 512: the dialogs space
    }
    existing = {"_collation": [1], "_truncate": [512], "_space": [512], "_user": [0],
                "_priv": [1, "universe", 0]}
    for name, space_id in SYSTEM_SPACES.items():
        row = rows[name]
        ops = [("insert", lambda: raw.insert(space_id, row)),
               ("replace", lambda: raw.replace(space_id, row)),
               ("upsert", lambda: raw.upsert(space_id, row, [("=", 1, 0)]))]
        if name in existing:
            ops.append(("delete", lambda: raw.delete(space_id, existing[name])))
        for op, call in ops:
            err = refused(call, f"{op} {name}")
            assert err.code == ACCESS_DENIED, (op, name, err.code, err.message)
            assert admin.eval(CATALOGUE) == before, f"{op} into {name} changed the catalogue"

    sql = [
        'CREATE TABLE intruder (id INT PRIMARY KEY)',
        'CREATE INDEX intruder ON "dialogs" ("text")',
        'DROP TABLE "dialogs"',
        'INSERT INTO "dialogs_requests" VALUES (NULL, NULL)',
        'DELETE FROM "dialogs"',
        'UPDATE "dialogs" SET "text" = \'x\'',
        'SELECT COUNT(*) FROM "dialogs"',
        'SELECT * FROM "dialogs_requests"',
        'TRUNCATE TABLE "dialogs"',
    ]
    for q in sql:
        refused(lambda: conn.execute(q), q)

    assert admin.eval(CATALOGUE) == before, "a refused request changed the catalogue"
    assert [r[4] for r in get_dialog(app, dialog)] == ["before"]
