"""Replica lag and failover time of a dialogs replica set, measured on this machine.

    DIALOGS_LIB_DIR=$PWD/target/dialogs .venv/bin/python tests/python/measure_replication.py

Starts a master and two replicas (init.lua, 127.0.0.1, temporary directories), once
asynchronous and once with DIALOGS_SYNC_QUORUM=2, and for each:

- lag: writer threads call new_dialog on the master for a fixed time; a trigger on
  one replica records, for every message it applies, its apply time minus the
  message's created_at (set by the master inside new_dialog). Same machine, same
  clock, so the difference is the time from the master's procedure to the row being
  readable on the replica. Reported as p50/p99/max over all messages.
- failover: kill -9 the master under the same load, run scripts/promote on a
  replica at once (an operator who reacts instantly), and time from the kill to the
  first acknowledged write on the new master (only where the survivors still make
  a quorum).
- refusal: in a synchronous set, with every replica stopped, one new_dialog: the
  error code, how long it waited (DIALOGS_SYNC_TIMEOUT, 2 s here), and whether the
  message was stored anyway (it must not be).

Modes: asynchronous with 3 instances, quorum 2 of 2, 2 of 3 and 3 of 3. The run
names the server it measured.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (REPO_ROOT, Server, admin_eval, admin_socket,  # noqa: E402
                     module_built, replica_set)
from synchro import wait_master  # noqa: E402

PROMOTE = REPO_ROOT / "scripts" / "promote"
SYNC_TIMEOUT_S = 2.0

# Installed on the replica: each applied message's lag in microseconds.
LAG_TRIGGER = (
    "(function() local clock = require('clock') _G.lags = {} "
    "box.space.dialogs:on_replace(function(old, new) if old == nil and new ~= nil then "
    "local c = tonumber(new[6]) if c == nil then c = new[6].timestamp * 1e6 end "
    "table.insert(_G.lags, tonumber(clock.time64() / 1000) - c) end end) "
    "return true end)()")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def write_load(target, seconds, threads, acked, stop):
    def run():
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        conn = None
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            srv = target()
            try:
                if conn is None or conn[0] is not srv:
                    conn = (srv, srv.connect(connection_timeout=1, socket_timeout=5))
                conn[1].call("new_dialog", [None, a, b, "load"])
                acked.append(time.monotonic())
            except Exception:  # the master died, or refuses: try again
                conn = None
                time.sleep(0.005)
    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


def measure(base: Path, names, sync_quorum, seconds: float, threads: int) -> dict:
    made = []

    def make(name, start=False, **kw):
        srv = Server(base / name, name=name, **kw)
        made.append(srv)
        return srv

    try:
        env = {"DIALOGS_SYNC_TIMEOUT": str(SYNC_TIMEOUT_S)} if sync_quorum else {}
        servers = replica_set(make, names, sync_quorum=sync_quorum, env=env)
        for s in servers:
            s.start()
        m, r1, r2 = servers[0], servers[1], servers[-1]
        wait_master(m)
        admin_eval(r2, LAG_TRIGGER)
        acked: list = []
        stop = threading.Event()
        t0 = time.monotonic()
        for t in write_load(lambda: m, seconds, threads, acked, stop):
            t.join()
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        lags = admin_eval(r2, "_G.lags")
        out = {
            "mode": (f"quorum {sync_quorum}" if sync_quorum else "async")
                    + f", {len(names)} instances",
            "writes_per_s": len(acked) / elapsed,
            "lag_samples": len(lags),
            "lag_p50_ms": percentile(lags, 50) / 1000,
            "lag_p99_ms": percentile(lags, 99) / 1000,
            "lag_max_ms": max(lags) / 1000,
        }

        out["promote_s"] = out["failover_s"] = float("nan")
        out["refusal"] = ""
        if sync_quorum and len(names) <= sync_quorum:
            out["refusal"] = refusal(m, servers[1:])
            return out  # one instance down, no quorum: no failover to time
        # Failover under load.
        current = {"srv": m}
        acked.clear()
        ts = write_load(lambda: current["srv"], seconds + 30, threads, acked, stop)
        time.sleep(1.0)
        m.kill()
        killed = time.monotonic()
        subprocess.run([str(PROMOTE), str(admin_socket(r1))], check=True,
                       capture_output=True, timeout=60)
        promoted = time.monotonic()
        current["srv"] = r1
        deadline = time.monotonic() + 30
        while not [a for a in acked if a > promoted] and time.monotonic() < deadline:
            time.sleep(0.005)
        first = min([a for a in acked if a > promoted], default=float("nan"))
        stop.set()
        for t in ts:
            t.join(10)
        out["promote_s"] = promoted - killed
        out["failover_s"] = first - killed
        return out
    finally:
        for s in made:
            s.stop()


def refusal(master, replicas) -> str:
    """Stops the replicas, sends one write: how it was refused, and whether it stayed."""
    for r in replicas:
        r.stop()
    conn = master.connect()
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    t0 = time.monotonic()
    try:
        conn.call("new_dialog", [None, a, b, "no quorum"])
        outcome = "acknowledged (!)"
    except Exception as e:  # the refusal under test
        outcome = f"error {getattr(e, 'args', ['?'])[0]}"
    waited = time.monotonic() - t0
    stored = admin_eval(master, "box.space.dialogs:len()")
    kept = admin_eval(master, "(function() local n = 0 for _, t in "
                              "box.space.dialogs:pairs() do if t[5] == 'no quorum' then "
                              "n = n + 1 end end return n end)()")
    return f"{outcome} after {waited:.2f} s, stored {kept} of {stored}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    if not module_built():
        sys.exit("run `make build` first")
    base = Path(tempfile.mkdtemp(prefix="dialogs-repl-measure-"))
    try:
        version = subprocess.run(["tarantool", "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
        rows = [measure(base / "async", ["m", "r1", "r2"], None, args.seconds, args.threads),
                measure(base / "sync22", ["m", "r1"], 2, args.seconds, args.threads),
                measure(base / "sync23", ["m", "r1", "r2"], 2, args.seconds, args.threads),
                measure(base / "sync33", ["m", "r1", "r2"], 3, args.seconds, args.threads)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{version}; {args.threads} writer threads, {args.seconds:.0f} s per mode")
    print("| mode | writes/s | lag p50 ms | lag p99 ms | lag max ms | samples "
          "| promote s | kill -9 to first write s | no quorum: a write |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['writes_per_s']:.0f} | {r['lag_p50_ms']:.2f} "
              f"| {r['lag_p99_ms']:.2f} | {r['lag_max_ms']:.2f} | {r['lag_samples']} "
              f"| {r['promote_s']:.2f} | {r['failover_s']:.2f} | {r['refusal']} |")


if __name__ == "__main__":
    main()
