"""What a connector and a Lua caller get from each procedure (README "Reply shape").

The shape depends on the server, which is probed, never named by version: where
the compat option c_func_iproto_multireturn exists and is 'new' (Tarantool 3.x's
default), a C function's results go over IPROTO one value each; elsewhere (2.x, or
the option set to 'old') they are wrapped in one array. The store never changes the
option; get_dialog adapts so that data[0] is the list of messages on every server.
"""

from __future__ import annotations

import uuid

import pytest

from dialogs_api import new_user
from harness import admin_eval, module_built

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

OPTION = "require('compat').c_func_iproto_multireturn"
HAS_OPTION = f"(pcall(function() return {OPTION} end))"
# The option exists and is 'new': results travel one value each.
ONE_EACH = (f"(function() local ok, o = pcall(function() return {OPTION} end) "
            f"return ok and o ~= nil and o:is_new() end)()")


@pytest.fixture
def srv(make_server):
    s = make_server("shape", start=False)
    s.env["DIALOGS_ADMIN_SOCKET"] = str(s.base_dir / "admin.sock")
    return s.start()


def is_message_tuple(t) -> bool:
    return isinstance(t, (list, tuple)) and len(t) == 6 and isinstance(t[0], uuid.UUID)


def write_dialog(conn, n: int):
    """n messages in a new dialog; returns the dialog and the replies' data."""
    dialog, a, b = str(uuid.uuid4()), str(new_user()), str(new_user())
    replies = [conn.call("new_dialog", [dialog, a, b, f"m{i}"]).data for i in range(n)]
    return dialog, replies


def check_shapes(srv, one_each: bool):
    """The documented shape for the server's behaviour, and no other."""
    conn = srv.connect()
    dialog, replies = write_dialog(conn, 3)
    for data in replies:
        if one_each:
            assert len(data) == 1 and isinstance(data[0], str), data    # data[0] is the id
        else:
            assert len(data) == 1 and isinstance(data[0], list) and len(data[0]) == 1 \
                and isinstance(data[0][0], str), data                   # data[0] is [id]
    ids = [d[0] if one_each else d[0][0] for d in replies]
    for opts in ([dialog], [dialog, {"limit": 2}], [str(uuid.uuid4())]):
        data = conn.call("get_dialog", opts).data
        # On every server: one value, the list of messages.
        assert len(data) == 1 and isinstance(data[0], list), data
        assert all(is_message_tuple(t) for t in data[0]), data
    assert [str(t[0]) for t in conn.call("get_dialog", [dialog]).data[0]] == ids
    assert len(conn.call("get_dialog", [dialog, {"limit": 2}]).data[0]) == 2
    assert conn.call("get_dialog", [str(uuid.uuid4())]).data == [[]]
    # A Lua caller (box.func) gets the results as Lua values: get_dialog one table of
    # messages where results go one value each, one value per message elsewhere.
    lua = (f"(function() local r = {{box.func.get_dialog:call{{'{dialog}'}}}} "
           f"local x = r[1] "
           f"return {{#r, (type(x) == 'table' or box.tuple.is(x)) and #x or -1}} end)()")
    assert admin_eval(srv, lua) == ([1, 3] if one_each else [3, 6])
    return ids


def test_each_procedure_replies_in_the_documented_shape(srv):
    check_shapes(srv, admin_eval(srv, ONE_EACH) is True)


def test_an_operator_setting_the_option_to_old_gets_the_2x_shapes(srv):
    if admin_eval(srv, HAS_OPTION) is not True:
        pytest.skip("this server has no compat option c_func_iproto_multireturn: it always "
                    "wraps a C function's results (the shapes of the test above)")
    # The module probes the option once per load, at its first call (made here,
    # if the harness's readiness probe has not made it already): a change takes
    # effect once the procedures are reloaded.
    conn = srv.connect()
    conn.call("new_dialog", [None, str(new_user()), str(new_user()), "load"])
    conn.call("get_dialog", [str(uuid.uuid4())])
    for value, one_each in (("old", False), ("new", True)):
        admin_eval(srv, f"(function() {OPTION} = '{value}' "
                        "box.schema.func.reload('new_dialog') "
                        "box.schema.func.reload('get_dialog') return true end)()")
        check_shapes(srv, one_each)
