"""A data directory made by an older Tarantool, opened by the suite's server: it
starts, upgrades the system spaces itself (logged), and keeps serving every old
message and new writes (docs/operations.md, "Upgrading the server").

Needs two servers: DIALOGS_UPGRADE_FROM names the older binary (for example
/usr/bin/tarantool, 2.6, when the suite runs with a 3.x `tarantool` first on PATH).
Without it, or when both are the same server, the test reports itself skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from dialogs_api import derived_dialog_id, get_dialog, new_dialog, new_user
from harness import READY_LOG_LINE, admin_eval, module_built, wait_until

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

UPGRADE_FROM = os.environ.get("DIALOGS_UPGRADE_FROM")
UPGRADED_LOG_LINE = "dialogs: box.schema.upgrade() done"


def version_of(binary: str) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True,
                          timeout=30).stdout.splitlines()[0]


def server_on(path_dir: Path, binary: str) -> dict:
    """The environment that makes `tarantool` mean `binary` for a Server's process."""
    path_dir.mkdir(parents=True, exist_ok=True)
    link = path_dir / "tarantool"
    if not link.exists():
        link.symlink_to(binary)
    return {"PATH": f"{path_dir}:{os.environ.get('PATH', '')}"}


def test_a_data_directory_of_an_older_server_is_upgraded_and_keeps_serving(
        make_server, tmp_path):
    if not UPGRADE_FROM:
        pytest.skip("set DIALOGS_UPGRADE_FROM to an older tarantool binary "
                    "(e.g. /usr/bin/tarantool) to test an upgrade from it")
    new_binary = shutil.which("tarantool")
    old_version, new_version = version_of(UPGRADE_FROM), version_of(new_binary)
    if old_version == new_version:
        pytest.skip(f"DIALOGS_UPGRADE_FROM is the suite's own server ({new_version})")

    old_env = server_on(tmp_path / "old-bin", UPGRADE_FROM)
    srv = make_server("upgraded", start=False, env=old_env)
    srv.env["DIALOGS_ADMIN_SOCKET"] = str(srv.base_dir / "admin.sock")

    # The old server makes the data: messages in two dialogs, some with request ids.
    srv.start()
    assert admin_eval(srv, "box.info.version") in old_version
    created_at_type = admin_eval(srv, "box.space.dialogs:format()[6].type")
    conn = srv.connect()
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    other = uuid.uuid4()
    request_ids = [str(uuid.uuid4()) for _ in range(10)]
    ids = [new_dialog(conn, None, str(a), str(b), f"old {i}", {"request_id": request_ids[i]})
           for i in range(10)]
    ids += [new_dialog(conn, None, str(b), str(a), f"old {i}") for i in range(10, 300)]
    other_ids = [new_dialog(conn, str(other), str(a), str(b), f"other {i}") for i in range(5)]
    before = get_dialog(conn, dialog)
    before_other = get_dialog(conn, other)
    assert [str(t[0]) for t in before] == ids
    srv.stop()

    # The suite's server opens it.
    srv.env.update({k: None for k in old_env})
    srv.start()
    # The old data already has the user and its grants, so the harness may see the
    # server serve before init.lua is done: wait for its last line.
    wait_until(lambda: READY_LOG_LINE in srv.log_of_run(), 60, "init.lua to finish")
    log = srv.log_of_run()
    assert "running box.schema.upgrade()" in log, log
    assert UPGRADED_LOG_LINE in log, log
    assert srv.log_errors() == []
    # The server's own check (public on 3.6+, internal before, as on 2.11) agrees.
    assert admin_eval(srv, "require('dialogs.capabilities').schema_needs_upgrade()") is False
    # The space keeps the type it was made with: old created_at values stay as they were.
    assert admin_eval(srv, "box.space.dialogs:format()[6].type") == created_at_type
    conn = srv.connect()
    after = get_dialog(conn, dialog)
    assert [list(t[:5]) for t in after] == [list(t[:5]) for t in before]
    assert [t[5] for t in after] == [t[5] for t in before]
    assert get_dialog(conn, other) == before_other
    # A retry of an old request returns the old id; new writes append after the old.
    assert new_dialog(conn, None, str(a), str(b), "old 3",
                      {"request_id": request_ids[3]}) == ids[3]
    newer = [new_dialog(conn, None, str(a), str(b), f"new {i}") for i in range(20)]
    assert uuid.UUID(newer[0]) > uuid.UUID(ids[-1])
    got = get_dialog(conn, dialog)
    assert [str(t[0]) for t in got] == ids + newer
    assert all(isinstance(t[5], type(before[0][5])) for t in got)
    assert got[-1][5] >= before[-1][5]

    # Upgraded once: the next start has nothing to do and serves the same.
    srv.restart()
    assert "box.schema.upgrade" not in srv.log_of_run()
    assert [str(t[0]) for t in get_dialog(srv.connect(), dialog)] == ids + newer
