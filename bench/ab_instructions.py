#!/usr/bin/env python3
"""Instructions per call of two builds (A/B): what a change adds to every call,
free of the machine's load (docs/benchmarks.md, "The cost of the metrics").

Each build's server (its init.lua, its library) runs under valgrind's callgrind,
which counts the instructions every thread of the process executes in user space;
a client makes N calls over IPROTO, and again N + DELTA on a fresh server: the
difference divided by DELTA is one call's, start-up and shutdown cancelled out.
The kernel's share of a call (the socket reads and writes) is not in the count.
What the event loop does between calls varies from run to run by about 100
instructions a call; --repeat takes the median of several such pairs, A and B
alternately.

    bench/ab_instructions.py --repo-a /tmp/ab-main --lib-a /tmp/ab-main/lib \\
        --repo-b . --lib-b target/dialogs

Needs valgrind, and the client tests' Python environment (.venv: `make deps-python`).
Servers listen on 127.0.0.1, in temporary directories, and are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))

import tarantool  # noqa: E402

from dialogs_api import derived_dialog_id  # noqa: E402

PASSWORD = "ab-instructions"
START_TIMEOUT_S = 180
# A call's text: the benchmark's `write` workload's length.
TEXT = "x" * 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instructions(repo: Path, lib: Path, proc: str, calls: int) -> int:
    """Instructions (callgrind's total) of a server that served `calls` calls."""
    work = Path(tempfile.mkdtemp(prefix="dialogs-ab-"))
    port = free_port()
    env = dict(os.environ, DIALOGS_LIB_DIR=str(lib), DIALOGS_DATA_DIR=str(work / "data"),
               DIALOGS_LISTEN=f"127.0.0.1:{port}", DIALOGS_PASSWORD=PASSWORD,
               DIALOGS_LOG_LEVEL="2")
    out = work / "callgrind.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         os.environ.get("TARANTOOL", "tarantool"), str(repo / "init.lua")],
        env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                conn = tarantool.Connection("127.0.0.1", port, user="dialogs",
                                            password=PASSWORD)
                break
            except tarantool.error.Error:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        a, b = uuid.uuid4(), uuid.uuid4()
        conn.call("new_dialog", [None, str(a), str(b), "hello"])
        dialog = str(derived_dialog_id(a, b))
        for _ in range(calls):
            if proc == "get_dialog":
                conn.call("get_dialog", [dialog, {"limit": 1}])
            else:
                conn.call("new_dialog", [None, str(a), str(b), TEXT])
        conn.close()
        server.terminate()
        server.wait(timeout=START_TIMEOUT_S)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise RuntimeError(f"no total in {out}")
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo-a", type=Path, required=True)
    p.add_argument("--lib-a", type=Path, required=True)
    p.add_argument("--repo-b", type=Path, required=True)
    p.add_argument("--lib-b", type=Path, required=True)
    p.add_argument("--calls", type=int, default=500, help="calls of the smaller run")
    p.add_argument("--delta", type=int, default=5000, help="calls the larger run adds")
    p.add_argument("--repeat", type=int, default=3, help="pairs of runs per build")
    args = p.parse_args()
    builds = {"A": (args.repo_a.resolve(), args.lib_a.resolve()),
              "B": (args.repo_b.resolve(), args.lib_b.resolve())}
    for proc in ("get_dialog", "new_dialog"):
        per_call: dict = {"A": [], "B": []}
        for _ in range(args.repeat):
            for side, (repo, lib) in builds.items():
                small = instructions(repo, lib, proc, args.calls)
                large = instructions(repo, lib, proc, args.calls + args.delta)
                per_call[side].append((large - small) / args.delta)
        a, b = statistics.median(per_call["A"]), statistics.median(per_call["B"])
        runs = ", ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(per_call["A"], per_call["B"]))
        print(f"{proc}: A {a:.0f}, B {b:.0f} instructions per call (each pair A/B: "
              f"{runs}): B - A = {b - a:+.0f} ({(b / a - 1) * 100:+.2f}%)", flush=True)


if __name__ == "__main__":
    main()
