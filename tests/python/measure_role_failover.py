"""Time from kill -9 of the elected leader to the first acknowledged write, in
config/replicaset-election.yaml on a Tarantool 3 server, over several runs.

    TARANTOOL=/path/to/tarantool DIALOGS_LIB_DIR=$PWD/target/dialogs \\
        .venv/bin/python tests/python/measure_role_failover.py [--runs 5]

Each run is election.failover_run on a fresh copy of the shipped file (free ports,
temporary directories): 4 writer threads with request ids, kill -9 of the leader,
clients retrying on the next address. Prints one line per run and the median; also
checks that each run's writers ended without an unexpected error and that the new
leader stores every acknowledged message exactly once, in order (exit 1 if not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_harness import Cluster, TARANTOOL, has_config_module, no_config_reason  # noqa: E402
from election import CONFIG_FILE, failover_run, stored_problems  # noqa: E402
from harness import module_built  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    if not module_built():
        print("run `make build` first", file=sys.stderr)
        return 2
    if not has_config_module():
        print(no_config_reason(), file=sys.stderr)
        return 2
    times = []
    for i in range(args.runs):
        cluster = Cluster(CONFIG_FILE)
        try:
            run = failover_run(cluster)
            errors = [w.error for w in run.writers if w.error]
            if errors:
                print(f"run {i + 1}: writer error {errors[0]!r}", file=sys.stderr)
                return 1
            problems = stored_problems(run)
            if problems:
                print(f"run {i + 1}: " + "; ".join(problems), file=sys.stderr)
                return 1
            times.append(run.first_ack_after_kill)
            print(f"run {i + 1}: killed {run.old_leader.name}, new leader "
                  f"{run.new_leader.name}, first acknowledged write "
                  f"{run.first_ack_after_kill:.2f} s after the kill; "
                  f"{sum(len(w.acked) for w in run.writers)} writes, "
                  f"{sum(w.retries for w in run.writers)} retries", flush=True)
        finally:
            cluster.remove()
    print(f"{TARANTOOL}: kill -9 -> first acknowledged write over {len(times)} runs: "
          f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
          f"max {max(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
