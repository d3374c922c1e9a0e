"""How fast a sharded store refuses, and then takes again, writes to a replica set
whose master was killed (kill -9), over several runs.

    VSHARD_DIR=/path/to/vshard DIALOGS_LIB_DIR=$PWD/target/dialogs \\
        .venv/bin/python tests/python/measure_sharded_failover.py [--runs 5]

Each run is sharded_failover.failover_run on a fresh cluster (two replica sets of
two, one router, DIALOGS_ROUTER_TIMEOUT 1 s, free ports, temporary directories).
Prints one line per run: the spread of the refusals (1009) of writes to the killed
replica set's dialogs, of the writes to the other replica set meanwhile, and the
time from scripts/promote to every one of the killed set's dialogs written again;
last, the spread over all runs. Exits 1 if a run shows what a user would see go
wrong (test_sharded_failover.py checks the same, without the times).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import module_built, server_description  # noqa: E402
from sharded import Cluster, vshard_missing  # noqa: E402
from sharded_failover import CLUSTER_ENV, LAYOUT, failover_run  # noqa: E402


def spread(values) -> str:
    return (f"median {statistics.median(values):.3f} s, min {min(values):.3f} s, "
            f"max {max(values):.3f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    if not module_built():
        print("run `make build` first", file=sys.stderr)
        return 2
    missing = vshard_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    refusals, others, promotes = [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dlg-measure-") as base:
            cluster = Cluster(Path(base), LAYOUT, env=CLUSTER_ENV)
            try:
                cluster.start()
                run = failover_run(cluster)
            finally:
                cluster.stop()
        if run.problems:
            print(f"run {i + 1}: " + "; ".join(run.problems), file=sys.stderr)
            return 1
        refusals += run.refusals_s
        others += run.others_s
        promotes.append(run.promote_to_writes_s)
        print(f"run {i + 1}: refused in {min(run.refusals_s):.3f}..{max(run.refusals_s):.3f} s, "
              f"other replica set written in {min(run.others_s):.3f}.."
              f"{max(run.others_s):.3f} s, promote -> writes again in "
              f"{run.promote_to_writes_s:.3f} s", flush=True)
    print(f"{server_description()}, {args.runs} runs: refusals {spread(refusals)}; "
          f"other replica set {spread(others)}; promote -> writes again {spread(promotes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
