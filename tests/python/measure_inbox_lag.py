"""The inbox's delivery lag on a sharded store: from new_dialog acknowledged by the
router to the message visible in the recipient's list_dialogs, under 50 writers.

    VSHARD_DIR=/path/to/vshard DIALOGS_LIB_DIR=$PWD/target/dialogs \\
        .venv/bin/python tests/python/measure_inbox_lag.py [--seconds 20] [--writers 50]
        [--probes 5] [--poll-ms N] [--out lag.json]

Two replica sets (a master each) and one router on this machine, free ports,
temporary directories. `--writers` threads write without pause, each in dialogs of
its own users, whose dialogs and inboxes fall on either replica set (in a process
of their own, so that the probes' timing does not wait for their interpreter);
`--probes` more threads each write one message and then read the recipient's list_dialogs
every PROBE_POLL_S until the message is its last one, and record the time from
the acknowledgement to that read (so the figures carry up to PROBE_POLL_S of
polling). Prints the probes' p50/p99/max lag, the writers' rate, and the storage
masters' CPU time while idle (before the load), as one JSON object.

`--poll-ms N` makes the storages' drainers look at their outbox every N ms instead
of waking on the insert trigger (the alternative the trigger was chosen over,
docs/sharding.md "The delivery lag").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dialogs_api import new_dialog, new_user  # noqa: E402
from harness import module_built, server_description, wait_until  # noqa: E402
from sharded import (Cluster, build_inboxes, list_dialogs, no_drift, outbox_backlog,  # noqa: E402
                     recount, vshard_missing)

PROBE_POLL_S = 0.001
IDLE_S = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--writers", type=int, default=50)
    p.add_argument("--probes", type=int, default=5)
    p.add_argument("--poll-ms", type=float, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not module_built():
        print("run `make build` first", file=sys.stderr)
        return 2
    missing = vshard_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dlg-lag-") as base:
        cluster = Cluster(Path(base), {"s1": 1, "s2": 1})
        try:
            cluster.start()
            return run(cluster, args)
        finally:
            cluster.stop()


def write_load(cluster: Cluster, writers: int, stop, written, failed) -> None:
    """`writers` threads writing without pause until `stop` (a process of its own)."""
    def writer(i: int) -> None:
        conn = cluster.connect(socket_timeout=30, connection_timeout=10)
        pairs = [(new_user(), new_user()) for _ in range(3)]
        n = 0
        while not stop.is_set():
            a, b = pairs[n % len(pairs)]
            try:
                new_dialog(conn, None, a, b, f"w{i} {n}")
            except Exception as e:  # noqa: BLE001 (reported, then the run fails)
                print(f"writer {i}: {e!r}", file=sys.stderr)
                with failed.get_lock():
                    failed.value += 1
                return
            n += 1
        with written.get_lock():
            written.value += n

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(cluster: Cluster, args) -> int:
    build_inboxes(cluster)
    # One call before the writers' process forks: the reply-shape probe of the
    # client helpers runs (and is cached) here, not in 50 threads at once there.
    new_dialog(cluster.connect(), None, new_user(), new_user(), "warm-up")
    masters = [cluster.master(n) for n in cluster.replicasets]
    if args.poll_ms is not None:
        for m in masters:
            cluster.eval(m, f"(function() local o = require('dialogs.outbox') "
                            f"o.POLL_S = {args.poll_ms / 1000} o.start() return true end)()")
    # Idle cost: the masters' CPU over IDLE_S with nothing to do.
    before = [cpu_seconds(m.pid) for m in masters]
    time.sleep(IDLE_S)
    idle = [(cpu_seconds(m.pid) - b) / IDLE_S for m, b in zip(masters, before)]

    stop = threading.Event()
    lock = threading.Lock()
    lags: list = []
    writers_stop = multiprocessing.Event()
    written = multiprocessing.Value("q", 0)
    failed = multiprocessing.Value("q", 0)
    load = multiprocessing.Process(target=write_load,
                                   args=(cluster, args.writers, writers_stop, written, failed))

    def connect():
        return cluster.connect(socket_timeout=30, connection_timeout=10)

    def probe(i: int) -> None:
        conn = connect()
        n = 0
        while not stop.is_set():
            a, b = new_user(), new_user()
            msg = new_dialog(conn, None, a, b, f"probe {i} {n}")
            acked = time.monotonic()
            while True:
                top = list_dialogs(conn, b, {"limit": 1})["dialogs"]
                if top and str(top[0]["last_id"]) == msg:
                    break
                time.sleep(PROBE_POLL_S)
            with lock:
                lags.append(time.monotonic() - acked)
            n += 1

    threads = [threading.Thread(target=probe, args=(i,), daemon=True)
               for i in range(args.probes)]
    cpu0 = [cpu_seconds(m.pid) for m in masters]
    t0 = time.monotonic()
    load.start()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    writers_stop.set()
    for t in threads:
        t.join(60)
    load.join(60)
    elapsed = time.monotonic() - t0
    load_cpu = [(cpu_seconds(m.pid) - c) / elapsed for m, c in zip(masters, cpu0)]
    wait_until(lambda: outbox_backlog(cluster) == 0, 120, "the outboxes to drain")
    drift = recount(cluster)
    report = {
        "server": server_description(),
        "wake": "trigger" if args.poll_ms is None else f"poll every {args.poll_ms} ms",
        "writers": args.writers,
        "probes": args.probes,
        "seconds": round(elapsed, 1),
        "messages_per_second": round((written.value + len(lags)) / elapsed),
        "lag_samples": len(lags),
        "lag_p50_ms": round(percentile(lags, 0.50) * 1000, 1) if lags else None,
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1) if lags else None,
        "lag_max_ms": round(max(lags) * 1000, 1) if lags else None,
        "lag_mean_ms": round(statistics.mean(lags) * 1000, 1) if lags else None,
        "storage_master_cpu_idle": [round(x, 4) for x in idle],
        "storage_master_cpu_under_load": [round(x, 3) for x in load_cpu],
        "outboxes": [cluster.eval(m, "require('dialogs.outbox').info()") for m in masters],
        "recount_after": {k: drift[k] for k in ("entries", "wrong", "missing", "extra",
                                                 "totals_wrong", "backlog")},
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if failed.value:
        print(f"{failed.value} writers failed (their errors are above)", file=sys.stderr)
        return 1
    return 0 if no_drift(drift) else 1


if __name__ == "__main__":
    sys.exit(main())
