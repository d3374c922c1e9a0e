#!/usr/bin/env python3
"""Sizing of a sharded dialogs store, from measured figures (docs/sharding.md, "Sizing").

    python3 bench/sizing.py [--bench bench/results/sharded/tarantool-<version>.json]
                            [--rebalance bench/results/rebalance.json]
                            [--inbox bench/results/inbox/tarantool-<version>.json]

Reads what `make bench` measured (server CPU per call of the native and the
sharded path, router and storage parts, and memory per message) and what the
live rebalancing test measured (bucket move speed), and prints the sizing table
as markdown: every number says which measurement or which stated assumption it
comes from. Re-run it after a new `make bench` or rebalancing run. Without
--bench it reads the newest run (by the date recorded in it) of
bench/results/sharded/tarantool-*.json, the files a `sharded` run writes there.
The inboxes (docs/benchmarks.md, "The inbox") add their memory per entry and per
totals row and the outbox's CPU per message, from the newest
bench/results/inbox/tarantool-*.json (or --inbox; none there: the table has no
inbox rows).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# --- assumptions (stated in the output) ---------------------------------------------
MESSAGES_PER_USER_PER_DAY = 50
RETENTION_DAYS = 365
# Busiest hour against the daily average.
PEAK_FACTOR = 3.0
# Reads per write: the benchmark's `mixed` workload (90% reads, 10% writes).
READS_PER_WRITE = 9
# A storage instance's memtx arena, and how full it may get.
MEMTX_GIB_PER_INSTANCE = 256
MEMTX_FILL = 0.8
# Members per storage replica set (a master and a replica), all holding all data.
MEMBERS_PER_REPLICASET = 2
# A Tarantool process serves requests in one tx thread: keep it at this share of
# one core at peak.
CORE_BUDGET = 0.7
# Concurrency at which the CPU per call is read (the report's 50 threads).
TARGET_C = 50
# Buckets per replica set at least, so that one bucket is at most ~1% of a set
# (vshard balances whole buckets).
BUCKETS_PER_REPLICASET = 100
# Dialogs each user's inbox holds an entry for (every conversation ever had;
# entries are not expired), and users with an inbox per daily user.
DIALOGS_PER_USER = 200
USERS_PER_DAILY_USER = 3

GIB = 1024 ** 3


def cell(report: dict, target: str, workload: str) -> dict:
    """The cell at the C nearest TARGET_C; of several rounds (--rounds), the one with
    the median server CPU per call, as the benchmark's own report takes it."""
    cells = [c for c in report["cells"]
             if c["target"] == target and c["workload"] == workload
             and c["mode"] == "conns" and c["durability"] == "write"]
    if not cells:
        raise SystemExit(f"{target} {workload} not in the benchmark report: run make bench "
                         f"with the sharded target (VSHARD_DIR=...)")
    c = min((c["concurrency"] for c in cells), key=lambda c: abs(c - TARGET_C))
    rounds = sorted((x for x in cells if x["concurrency"] == c),
                    key=lambda x: x["server_cpu_us"])
    return rounds[len(rounds) // 2]


def shown(path: Path) -> str:
    """A path as the table names it: from the repository root when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def newest_run(folder: str) -> Path | None:
    """bench/results/<folder>/tarantool-<version>.json of the newest run, if any."""
    runs = sorted(ROOT.glob(f"bench/results/{folder}/tarantool-*.json"),
                  key=lambda p: json.loads(p.read_text()).get("date", ""))
    return runs[-1] if runs else None


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def rounds(report: dict, target: str, workload: str, concurrency: int) -> list[dict]:
    """Every round of one cell, in the order they ran."""
    return [c for c in report["cells"]
            if c["target"] == target and c["workload"] == workload and c["mode"] == "conns"
            and c["durability"] == "write" and c["concurrency"] == concurrency]


def inbox_figures(report: dict) -> dict | None:
    """What an inbox run measured: memory per entry and per totals row, and the
    outbox's server CPU per message (sharded write with it less without it,
    round by round, median; storages and router apart)."""
    mem = report.get("inbox_memory")
    if not mem:
        return None
    out = {
        "per_entry": (mem["entry_space_bsize"] + mem["entry_index_bsize"]) / mem["entries"],
        "per_totals": (mem["totals_space_bsize"] + mem["totals_index_bsize"]) / mem["totals"],
        "outbox": None,
    }
    with_outbox = [c for c in report["cells"] if c["target"] == "sharded"
                   and c["workload"] == "write" and c["mode"] == "conns"]
    if with_outbox:
        c = min((x["concurrency"] for x in with_outbox), key=lambda c: abs(c - TARGET_C))
        now, before = rounds(report, "sharded", "write", c), rounds(report, "sharded-base", "write", c)
        pairs = list(zip(now, before))
        if pairs:
            def storages(r: dict) -> float:
                return r["server_cpu_us"] - r["router_cpu_us"]
            out["outbox"] = {
                "storage_us": median([storages(a) - storages(b) for a, b in pairs]),
                "rounds": len(pairs),
                "concurrency": c,
            }
    return out


def newest_sharded_run() -> Path:
    """bench/results/sharded/tarantool-<version>.json of the newest run."""
    run = newest_run("sharded")
    if run is None:
        raise SystemExit("no bench/results/sharded/tarantool-*.json: run the benchmark's "
                         "sharded target with --out bench/results/sharded (docs/sharding.md, \"Cost\")")
    return run


def fmt(n: float) -> str:
    if n >= 1e12:
        return f"{n / 1e12:.2f} T"
    if n >= 1e9:
        return f"{n / 1e9:.1f} G"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e4:
        return f"{n / 1e3:.0f} k"
    return f"{n:,.0f}"


def duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, default=None,
                    help="a sharded run's report (default: the newest of "
                         "bench/results/sharded/tarantool-*.json)")
    ap.add_argument("--rebalance", type=Path, default=ROOT / "bench/results/rebalance.json")
    ap.add_argument("--inbox", type=Path, default=None,
                    help="an inbox run's report (default: the newest of "
                         "bench/results/inbox/tarantool-*.json, if any)")
    args = ap.parse_args()
    if args.bench is None:
        args.bench = newest_sharded_run()
    if args.inbox is None:
        args.inbox = newest_run("inbox")
    inbox_report = json.loads(args.inbox.read_text()) if args.inbox else None
    inbox = inbox_figures(inbox_report) if inbox_report else None
    args.bench = args.bench.resolve()
    bench = json.loads(args.bench.read_text())
    reb = json.loads(args.rebalance.read_text())

    write, page = cell(bench, "sharded", "write"), cell(bench, "sharded", "page")
    router_write, router_page = write["router_cpu_us"], page["router_cpu_us"]
    storage_write = write["server_cpu_us"] - router_write
    storage_page = page["server_cpu_us"] - router_page
    mem = bench["tt_memory"]
    if not mem:
        raise SystemExit(f"{shown(args.bench)} has no memory measurement (a --cells-only run): "
                         "pass --bench a full run's report")
    bytes_per_msg = mem["arena_used"] / mem["tuples"]
    move_speed = reb["moved_messages_per_second"]
    if inbox and inbox["outbox"]:
        # Every message also goes through the outbox: its delivery's CPU is the
        # storages' (the drainer routes from inside the storage, to the receiving
        # entry's storage), never the routers' that clients call.
        storage_write += inbox["outbox"]["storage_us"]
    src = {
        "cpu": f"{shown(args.bench)} (`sharded` cells at C={write['concurrency']}, "
               f"{bench['date']}, {bench['machine']}, Tarantool {bench['tarantool_version']})",
        "mem": f"{shown(args.bench)} (memory: {mem['tuples']:.0f} messages of 100 "
               "characters, memtx arena growth)",
        "inbox": (f"{shown(args.inbox)} ({inbox_report['date']}, Tarantool "
                  f"{inbox_report['tarantool_version']})") if inbox else "",
        "move": f"{shown(args.rebalance)} ({reb['buckets_moved']} buckets, "
                f"{reb['messages_on_new_replica_set']} messages moved in {reb['move_seconds']} s "
                f"with rebalancer_max_sending={reb['rebalancer_max_sending']}, under load)",
    }

    rows = []
    for users in (10_000_000, 100_000_000):
        per_day = users * MESSAGES_PER_USER_PER_DAY
        writes_peak = per_day / 86400 * PEAK_FACTOR
        reads_peak = writes_peak * READS_PER_WRITE
        stored = per_day * RETENTION_DAYS
        entries = users * USERS_PER_DAILY_USER * DIALOGS_PER_USER if inbox else 0
        inbox_bytes = (entries * inbox["per_entry"]
                       + users * USERS_PER_DAILY_USER * inbox["per_totals"]) if inbox else 0
        data_bytes = stored * bytes_per_msg + inbox_bytes
        per_instance = MEMTX_GIB_PER_INSTANCE * GIB * MEMTX_FILL
        rs_by_memory = math.ceil(data_bytes / per_instance)
        # Masters take every write; reads spread over all members.
        master_core = (writes_peak * storage_write
                       + reads_peak * storage_page / MEMBERS_PER_REPLICASET) / 1e6
        rs_by_cpu = math.ceil(master_core / CORE_BUDGET)
        replicasets = max(rs_by_memory, rs_by_cpu)
        router_cores = (writes_peak * router_write + reads_peak * router_page) / 1e6
        routers = math.ceil(router_cores / CORE_BUDGET)
        storage_cores = master_core / replicasets
        to_move = stored / (replicasets + 1)
        # A round bucket count with enough buckets for every replica set.
        need = replicasets * BUCKETS_PER_REPLICASET
        bucket_count = 10 ** math.ceil(math.log10(need / 3)) * 3
        rows.append({
            "bucket_count": bucket_count, "per_bucket": stored / bucket_count,
            "users": users, "writes_peak": writes_peak, "reads_peak": reads_peak,
            "stored": stored, "data_bytes": data_bytes, "rs_by_memory": rs_by_memory,
            "entries": entries, "inbox_bytes": inbox_bytes,
            "rs_by_cpu": rs_by_cpu, "replicasets": replicasets, "routers": routers,
            "router_cores": router_cores, "storage_cores": storage_cores,
            "to_move": to_move, "move_s": to_move / move_speed,
            "move_parallel_s": to_move / move_speed / replicasets,
        })

    out = []
    out.append("| | 10 M daily users | 100 M daily users | from |")
    out.append("|---|---:|---:|---|")

    def row(name, f, source):
        out.append(f"| {name} | {f(rows[0])} | {f(rows[1])} | {source} |")

    row("messages per day", lambda r: fmt(r["users"] * MESSAGES_PER_USER_PER_DAY),
        f"assumption: {MESSAGES_PER_USER_PER_DAY} per user")
    row("peak writes/s (`new_dialog`)", lambda r: fmt(r["writes_peak"]),
        f"assumption: busiest hour {PEAK_FACTOR:g}× the daily average")
    row("peak reads/s (`get_dialog`, a 50-message page)", lambda r: fmt(r["reads_peak"]),
        f"assumption: {READS_PER_WRITE} reads per write (the benchmark's `mixed`)")
    row("messages kept (1 year)", lambda r: fmt(r["stored"]),
        f"assumption: {RETENTION_DAYS} days")
    row("memory per message, indexes and slab overhead included",
        lambda r: f"{bytes_per_msg:.0f} B", src["mem"])
    if inbox:
        row("inbox entries", lambda r: fmt(r["entries"]),
            f"assumption: {USERS_PER_DAILY_USER} users with an inbox per daily user, "
            f"{DIALOGS_PER_USER} dialogs each (entries are kept)")
        row("memory per inbox entry (100-character last text), indexes included",
            lambda r: f"{inbox['per_entry']:.0f} B",
            f"{src['inbox']}: memtx `bsize()` of `dialogs_inbox` and its indexes on one store (a storage adds its `bucket_id` index, not in this figure)")
        row("memory per totals row (the badge), indexes included",
            lambda r: f"{inbox['per_totals']:.0f} B",
            f"{src['inbox']}: `dialogs_inbox_totals` and its index on one store (a storage adds its `bucket_id` index)")
        row("inboxes in memory, per copy", lambda r: f"{r['inbox_bytes'] / 1024 ** 4:,.1f} TiB",
            "entries × memory per entry + users × memory per totals row")
    row("data in memory, per copy", lambda r: f"{r['data_bytes'] / 1024 ** 4:,.0f} TiB",
        "messages kept × memory per message" + (" + the inboxes" if inbox else ""))
    row("storage replica sets (by memory)", lambda r: f"{r['rs_by_memory']:,}",
        f"assumption: {MEMTX_GIB_PER_INSTANCE} GiB memtx per instance, "
        f"{MEMTX_FILL:.0%} full")
    outbox_note = ""
    if inbox and inbox["outbox"]:
        o = inbox["outbox"]
        outbox_note = (f" (write: {o['storage_us']:.1f} µs of it the outbox's delivery, "
                       f"median of {o['rounds']} rounds with and without it at "
                       f"C={o['concurrency']}, {src['inbox']})")
    row("storage replica sets (by master CPU)", lambda r: f"{r['rs_by_cpu']:,}",
        f"storage CPU/call: write {storage_write:.1f} µs, page {storage_page:.1f} µs{outbox_note}, "
        f"{src['cpu']}; a master at most {CORE_BUDGET:.0%} of its tx core")
    row("**storage replica sets**", lambda r: f"**{r['replicasets']:,}**",
        "the larger of the two")
    row("storage instances (memory, cores each at peak)",
        lambda r: f"{r['replicasets'] * MEMBERS_PER_REPLICASET:,} × "
                  f"{MEMTX_GIB_PER_INSTANCE} GiB, {r['storage_cores']:.2f} core",
        f"assumption: {MEMBERS_PER_REPLICASET} members per replica set (master + replica); "
        "cores: a master's share of the peak load")
    row("router CPU at peak", lambda r: f"{r['router_cores']:.1f} cores",
        f"router CPU/call: write {router_write:.1f} µs, page {router_page:.1f} µs, "
        f"{src['cpu']}")
    row("**routers**", lambda r: f"**{r['routers']:,}** (1 core, ~1 GiB each)",
        f"a router at most {CORE_BUDGET:.0%} of one core (its tx thread); it holds "
        "no data")
    row("bucket count (`DIALOGS_BUCKET_COUNT` / `sharding.bucket_count`)",
        lambda r: f"{r['bucket_count']:,} ({fmt(r['per_bucket'])} messages each)",
        f"assumption: at least {BUCKETS_PER_REPLICASET} buckets per replica set "
        "(the default 3000 is for up to 30)")
    row("adding one replica set: messages to move", lambda r: fmt(r["to_move"]),
        "messages kept ÷ (replica sets + 1)")
    row("adding one replica set: rebalance time, one sender at the measured speed",
        lambda r: duration(r["move_s"]),
        f"{move_speed:.0f} messages/s, {src['move']}")
    row("… every old replica set sending at once, if the new one kept up",
        lambda r: duration(r["move_parallel_s"]),
        "the same speed per sender, all senders in parallel: a lower bound, not measured "
        "(the receiving master's own limit is not known)")
    print("\n".join(out))
    print()
    inputs = [src["cpu"], src["mem"], src["move"]] + ([src["inbox"]] if inbox else [])
    print(f"Inputs: {'; '.join(inputs)}.")


if __name__ == "__main__":
    main()
