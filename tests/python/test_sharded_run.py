"""`make run-sharded` (scripts/run-sharded) as a user runs it: in the foreground, five
instances on 127.0.0.1 (init.lua on 2.x, config/sharded.yaml on a server with the
declarative configuration), the report's client served through the router, and
Ctrl-C stopping everything it started. Needs vshard; skipped without it."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import uuid

import tarantool

from dialogs_api import derived_dialog_id
from harness import REPO_ROOT, free_port, wait_until
from sharded import build_inbox, list_dialogs, needs_vshard

pytestmark = needs_vshard

RUN_SHARDED = REPO_ROOT / "scripts" / "run-sharded"
# The storages take the router's port + 10, 11, 20, 21.
OFFSETS = (0, 10, 11, 20, 21)


def nobody_listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def port_is_free(port: int) -> bool:
    """Nobody listens on the port and no connection uses it as its local port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes outgoing connections' local ports from."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_base_port() -> int:
    """A block of ports for the five instances, below the ephemeral range where it
    can be: the members connect to each other while they start, and an outgoing
    connection's local port taken from the block would make a member's bind fail."""
    low, _ = ephemeral_ports()
    bases = random.Random().sample(range(10000, low - 21), 50) if low - 21 > 10000 else []
    bases += [free_port() for _ in range(50)]
    for base in bases:
        if base + 21 < 65536 and all(port_is_free(base + o) for o in OFFSETS):
            return base
    raise AssertionError("no free block of ports")


class Console:
    """An instance's admin console at `path`, as harness.admin_eval takes one."""

    def __init__(self, path):
        self.name = path.parent.name
        self.env = {"DIALOGS_ADMIN_SOCKET": str(path)}


def stop_run_sharded(proc: subprocess.Popen) -> None:
    """Ctrl-C: SIGINT to the foreground process group; SIGKILL (and an error) if it
    does not end within a minute."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


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
        # The inbox's calls are served and granted too, and the storages' outboxes
        # (started by the storage role on the configuration's road) deliver.
        for name in ("s1-master", "s2-master"):
            build_inbox(Console(tmp_path / "data" / name / "tarantool.control"))
        page = wait_until(lambda: list_dialogs(conn, bob)["dialogs"], 30,
                          "the message in Bob's list")
        assert [(str(e["last_id"]), e["last_text"], e["unread"]) for e in page] \
            == [(msg, "hi Bob", 1)]
        conn.close()
    finally:
        stop_run_sharded(proc)
    # Nothing it started still listens.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(nobody_listens(port + o) for o in OFFSETS):
        time.sleep(0.2)
    assert all(nobody_listens(port + o) for o in OFFSETS)
