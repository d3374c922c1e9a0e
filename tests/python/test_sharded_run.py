"""`make run-sharded` (scripts/run-sharded) as a user runs it: in the foreground, five
instances on 127.0.0.1 (init.lua on 2.x, config/sharded.yaml on a server with the
declarative configuration), the report's client served through the router, and
Ctrl-C stopping everything it started. Needs vshard; skipped without it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid

import tarantool

from dialogs_api import derived_dialog_id
from harness import REPO_ROOT, free_port, wait_until
from sharded import needs_vshard

pytestmark = needs_vshard

RUN_SHARDED = REPO_ROOT / "scripts" / "run-sharded"
# The storages take the router's port + 10, 11, 20, 21.
OFFSETS = (0, 10, 11, 20, 21)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_base_port() -> int:
    for _ in range(50):
        base = free_port()
        if base + 21 < 65536 and all(port_is_free(base + o) for o in OFFSETS):
            return base
    raise AssertionError("no free block of ports")


def test_run_sharded_serves_the_reports_client_and_stops_on_ctrl_c(tmp_path):
    port = free_base_port()
    env = dict(os.environ, DIALOGS_LISTEN=f"127.0.0.1:{port}",
               DIALOGS_DATA_DIR=str(tmp_path / "data"), DIALOGS_PASSWORD="run-sharded-pw")
    log = open(tmp_path / "run-sharded.out", "wb")
    proc = subprocess.Popen([str(RUN_SHARDED)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out = lambda: (tmp_path / "run-sharded.out").read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "the cluster's buckets are in place" in out() or proc.poll() is not None,
                   120, "the router to bootstrap the buckets", interval=0.2)
        assert proc.poll() is None, out()
        for offset in OFFSETS[1:]:
            assert f"listening on 127.0.0.1:{port + offset}" in out()

        # The report's client: tarantool-python, string uuids, conn.call.
        conn = tarantool.connect("127.0.0.1", port, user="dialogs", password="run-sharded-pw")
        alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
        reply = conn.call("new_dialog", (None, alice, bob, "hi Bob")).data
        msg = reply[0][0] if isinstance(reply[0], list) else reply[0]
        dialog = str(derived_dialog_id(uuid.UUID(alice), uuid.UUID(bob)))
        messages = wait_until(lambda: conn.call("get_dialog", (dialog,)).data[0], 10,
                              "the message to be readable")
        assert [(str(m[0]), m[4]) for m in messages] == [(msg, "hi Bob")]
        conn.close()
    finally:
        # Ctrl-C: SIGINT to the foreground process group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # Nothing it started still listens.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(port_is_free(port + o) for o in OFFSETS):
        time.sleep(0.2)
    assert all(port_is_free(port + o) for o in OFFSETS)
