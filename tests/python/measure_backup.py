"""What a backup costs a serving store: writes/s and latency before and during one,
measured on this machine (docs/backup.md, "What a backup costs").

    DIALOGS_LIB_DIR=$PWD/target/dialogs .venv/bin/python tests/python/measure_backup.py

Starts one instance (init.lua, 127.0.0.1, a temporary directory), stores --messages
messages through new_dialog and takes a snapshot (the file a backup copies most of),
then runs --threads writers (one connection each, new_dialog in a loop) for
--seconds without a backup, then for --seconds during which scripts/backup takes
backups one after another (each into a fresh directory, removed once done). A call
counts for the phase in which it started; latency is from call to reply, as the
client sees it. The machine is shared and noisy: run it twice and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO_ROOT, Server, admin_eval, module_built  # noqa: E402
from measure_replication import percentile  # noqa: E402

BACKUP_SCRIPT = REPO_ROOT / "scripts" / "backup"
MIB = 1024 * 1024
# The seeded messages' text: a typical chat line, so the snapshot has a realistic size.
SEED_TEXT = "x" * 200
SEED_BATCH = 10_000

SEED_LUA = ("(function() local a, b = '{a}', '{b}' for i = 1, {n} do "
            "box.func.new_dialog:call({{box.NULL, a, b, '{text}'}}) end return true end)()")


def writers(srv: Server, threads: int, calls: list, stop: threading.Event) -> list:
    def run():
        conn = srv.connect(connection_timeout=5, socket_timeout=30)
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        while not stop.is_set():
            t0 = time.monotonic()
            conn.call("new_dialog", [None, a, b, "load"])
            calls.append((t0, time.monotonic() - t0))
    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


def phase(calls: list, start: float, end: float) -> dict:
    lat = [d for t0, d in calls if start <= t0 < end]
    return {"writes_per_s": round(len(lat) / (end - start)),
            "p50_ms": round(percentile(lat, 50) * 1000, 2),
            "p99_ms": round(percentile(lat, 99) * 1000, 2),
            "max_ms": round(max(lat) * 1000, 2) if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    if not module_built():
        print("run `make build` first", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="dlg-measure-backup-"))
    srv = Server(base / "live", memtx_memory=1024 * MIB,
                 env={"DIALOGS_ADMIN_SOCKET": str(base / "admin.sock")})
    try:
        srv.start()
        for done in range(0, args.messages, SEED_BATCH):
            admin_eval(srv, SEED_LUA.format(a=uuid.uuid4(), b=uuid.uuid4(), text=SEED_TEXT,
                                            n=min(SEED_BATCH, args.messages - done)), 600)
        admin_eval(srv, "box.snapshot()", 600)
        calls: list = []
        stop = threading.Event()
        ts = writers(srv, args.threads, calls, stop)
        time.sleep(1.0)  # connections up, the load steady
        before_start = time.monotonic()
        time.sleep(args.seconds)
        during_start = time.monotonic()
        backups = []
        while time.monotonic() < during_start + args.seconds:
            dest = base / f"backup-{len(backups)}"
            t0 = time.monotonic()
            out = subprocess.run(["tarantool", str(BACKUP_SCRIPT), "take",
                                  srv.env["DIALOGS_ADMIN_SOCKET"], str(dest)],
                                 capture_output=True, text=True, timeout=600)
            took = time.monotonic() - t0
            if out.returncode != 0:
                print(out.stdout + out.stderr, file=sys.stderr)
                return 1
            size = sum(f["size"] for f in
                       json.loads((dest / "manifest.json").read_text())["files"])
            backups.append((took, size))
            shutil.rmtree(dest)
        during_end = time.monotonic()
        stop.set()
        for t in ts:
            t.join(30)
        before = phase(calls, before_start, during_start)
        during = phase(calls, during_start, during_end)
        took = sorted(t for t, _ in backups)
        size_mib = backups[0][1] / MIB
        print(json.dumps({
            "server": admin_eval(srv, "box.info.version"),
            "messages": args.messages, "threads": args.threads,
            "backup_mib": round(size_mib, 1), "backups": len(backups),
            "backup_s_median": round(took[len(took) // 2], 2),
            "copy_mib_per_s": round(size_mib / took[len(took) // 2]),
            "before": before, "during": during,
            "load": os.getloadavg()[0],
        }, indent=1))
        return 0
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
