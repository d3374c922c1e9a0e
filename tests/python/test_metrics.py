"""What an operator sees (docs/metrics.md): after a known sequence of calls and
errors, the figures hold exactly those counts.

On every server, `require('dialogs').stats()` on the admin console; where the
`metrics` module loads (Tarantool 3 bundles it; on 2.x a checkout of it named by
METRICS_DIR, and of `checks` by CHECKS_DIR where the server lacks it), the
Prometheus text its plugin renders, read with the standard parser
(`prometheus_client`): directly (init.lua, and `make run`'s road, the
configuration on 3.x) and through a router (needs vshard: VSHARD_DIR). And slow
calls: logged with sizes, never the text, at most SLOW_LINES_PER_S lines a second.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
import uuid
from typing import Dict, Optional

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import config_harness
from dialogs_api import derived_dialog_id, expect_error, get_dialog, new_dialog, new_user
from harness import ER_ACCESS_DENIED, admin_eval, module_built, run_init_expecting_exit, wait_until
from sharded import make_cluster, vshard_missing  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not module_built(), reason="run `make build` first")

# src/stats.rs, SLOW_LINES_PER_S.
SLOW_LINES_PER_S = 10
SLOW_LINE = re.compile(r"dialogs: slow call: (\w+) took ([\d.]+) ms \(threshold (\d+) ms\), "
                       r"(ok|error \d+); (.*)$", re.M)
PROMETHEUS_TEXT = "require('metrics.plugins.prometheus').collect_http().body"
STATS = "require('dialogs').stats()"

# The documented metrics (docs/metrics.md, "Metrics") a single store exports.
STORE_METRICS = ["dialogs_calls_total", "dialogs_errors_total",
                 "dialogs_call_duration_seconds_bucket", "dialogs_call_duration_seconds_sum",
                 "dialogs_call_duration_seconds_count", "dialogs_messages",
                 "dialogs_request_records"]
ROUTER_METRICS = ["dialogs_router_calls_total", "dialogs_router_errors_total"]


def metrics_env() -> Dict[str, str]:
    """LUA_PATH entries for the metrics and checks checkouts the environment names."""
    paths = [f"{d}/?.lua;{d}/?/init.lua" for d in (os.environ.get("METRICS_DIR"),
                                                   os.environ.get("CHECKS_DIR")) if d]
    return {"LUA_PATH": ";".join(paths) + ";;"} if paths else {}


@functools.lru_cache(maxsize=1)
def metrics_missing() -> Optional[str]:
    """None when the server under test loads `metrics`, else why not."""
    env = dict(os.environ, **metrics_env())
    probe = ("local ok, err = pcall(require, 'metrics') "
             "if not ok then io.stderr:write(tostring(err), '\\n') end os.exit(ok and 0 or 1)")
    out = subprocess.run(["tarantool", "-e", probe], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=30)
    if out.returncode == 0:
        return None
    first = (out.stderr.strip().splitlines() or ["?"])[0]
    return ("the metrics module does not load on this server (Tarantool 3 bundles it; "
            "on 2.x set METRICS_DIR to a checkout of tarantool/metrics, and CHECKS_DIR "
            f"to one of tarantool/checks where the server lacks it): {first}")


def run_sequence(conn) -> dict:
    """The known sequence: what each procedure's counters must say after it."""
    a, b = new_user(), new_user()
    dialog = derived_dialog_id(a, b)
    for i in range(5):
        new_dialog(conn, None, str(a), str(b), f"message {i}")
    request = str(uuid.uuid4())
    for _ in range(2):  # a retry: counted twice, stored once
        new_dialog(conn, None, str(a), str(b), "once", {"request_id": request})
    for _ in range(2):
        expect_error(lambda: new_dialog(conn, None, str(a), str(b), ""), 1004)
    expect_error(lambda: new_dialog(conn, None, 42, str(b), "x"), 1002)
    expect_error(lambda: conn.call("new_dialog", [None, str(a)]), 1001)
    for limit in (2, 3, 10):
        assert len(get_dialog(conn, dialog, {"limit": limit})) == min(limit, 6)
    for _ in range(2):
        expect_error(lambda: get_dialog(conn, dialog, {"limit": 0}), 1005)
    expect_error(lambda: get_dialog(conn, "00000000-0000-0000-0000-000000000000"), 1003)
    return {
        "new_dialog": {"calls": 11, "errors": {1004: 2, 1002: 1, 1001: 1}},
        "get_dialog": {"calls": 6, "errors": {1005: 2, 1003: 1}},
        "messages": 6,
        "request_records": 1,
    }


# --- reading the figures ------------------------------------------------------------


def prometheus_samples(srv) -> Dict[str, list]:
    """The Prometheus text `srv` renders, parsed: sample name -> [(labels, value)]."""
    text = admin_eval(srv, PROMETHEUS_TEXT)
    samples: Dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: Dict[str, list], name: str, **labels) -> Optional[float]:
    """The one sample `name` whose labels include `labels` (others, such as the
    configuration's global labels, may be there too), or None."""
    found = [v for lbl, v in samples.get(name, [])
             if all(lbl.get(k) == str(w) for k, w in labels.items())]
    assert len(found) <= 1, f"{name}{labels}: {len(found)} samples"
    return found[0] if found else None


def check_prometheus_procs(samples, expected_procs: dict) -> None:
    """Calls, errors by code and the histogram of each procedure, exactly."""
    for proc, e in expected_procs.items():
        assert value(samples, "dialogs_calls_total", proc=proc) == e["calls"], proc
        errors = {int(lbl["code"]): v for lbl, v in samples.get("dialogs_errors_total", [])
                  if lbl.get("proc") == proc}
        assert errors == e["errors"], proc
        assert value(samples, "dialogs_call_duration_seconds_count", proc=proc) == e["calls"]
        assert value(samples, "dialogs_call_duration_seconds_sum", proc=proc) > 0
        buckets = sorted((float(lbl["le"]), v)
                         for lbl, v in samples["dialogs_call_duration_seconds_bucket"]
                         if lbl.get("proc") == proc)
        assert buckets[-1] == (float("inf"), e["calls"]), proc
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{proc}: buckets not cumulative: {buckets}"


def check_stats_procs(stats: dict, expected_procs: dict) -> None:
    bounds = stats["latency_bounds_s"]
    assert bounds == sorted(bounds) and len(bounds) > 1
    for proc, e in expected_procs.items():
        p = stats["procs"][proc]
        assert p["calls"] == e["calls"], proc
        assert {int(k): v for k, v in p["errors"].items()} == e["errors"], proc
        assert len(p["latency_buckets"]) == len(bounds) + 1
        assert sum(p["latency_buckets"]) == e["calls"], proc
        assert p["latency_sum_s"] > 0


# --- a single store ------------------------------------------------------------------


ROADS = ["init.lua", "make run"]


def start_store(road: str, make_server, tmp_path, env: Optional[dict] = None):
    e = dict(metrics_env(), **(env or {}))
    if road == "init.lua":
        return make_server(env=dict(e, DIALOGS_ADMIN_SOCKET=str(tmp_path / "admin.sock")))
    srv = config_harness.run_server(tmp_path / "run", env=e)
    _started.append(srv)
    return srv.start()


_started: list = []


@pytest.fixture(autouse=True)
def stop_run_servers():
    yield
    while _started:
        _started.pop().stop()


@pytest.mark.parametrize("road", ROADS)
def test_stats_hold_exactly_the_calls_made(road, make_server, tmp_path):
    srv = start_store(road, make_server, tmp_path)
    expected = run_sequence(srv.connect())
    stats = admin_eval(srv, STATS)
    check_stats_procs(stats, {p: expected[p] for p in ("new_dialog", "get_dialog")})
    assert stats["store"]["messages"] == expected["messages"]
    assert stats["store"]["request_records"] == expected["request_records"]
    # Off by default; reading the figures is not counted.
    assert stats.get("slow_ms") is None
    assert "dialogs_stats" not in stats["procs"]
    assert not slow_lines(srv)


@pytest.mark.parametrize("road", ROADS)
def test_prometheus_text_holds_every_metric_exactly(road, make_server, tmp_path):
    if metrics_missing():
        pytest.skip(metrics_missing())
    srv = start_store(road, make_server, tmp_path)
    expected = run_sequence(srv.connect())
    samples = prometheus_samples(srv)
    for name in STORE_METRICS:
        assert name in samples, name
    check_prometheus_procs(samples, {p: expected[p] for p in ("new_dialog", "get_dialog")})
    assert value(samples, "dialogs_messages") == expected["messages"]
    assert value(samples, "dialogs_request_records") == expected["request_records"]
    # A second collection reads the same counts again, never adds them up.
    assert prometheus_samples(srv)["dialogs_calls_total"] == samples["dialogs_calls_total"]


# The outbox (dialogs.outbox drains it on a vshard storage; every store has the
# space, empty where nothing drains): its space, and the module's own figures.
# (One line each: the console reads a line at a time.)
FAKE_OUTBOX_MODULE = ("(function() package.loaded['dialogs.outbox'] = {info = function() "
                      "return {backlog = 7, oldest_age_s = 3.5, delivered = 40, failures = 2} "
                      "end} return true end)()")


def uuid7_of(unix_ms: int) -> uuid.UUID:
    """A UUIDv7 whose time is unix_ms."""
    raw = bytearray(uuid.uuid4().bytes)
    raw[0:6] = unix_ms.to_bytes(6, "big")
    raw[6] = 0x70 | (raw[6] & 0x0F)
    return uuid.UUID(bytes=bytes(raw))


@pytest.mark.parametrize("exported", [False, True])
def test_the_outbox_figures_come_from_its_space_and_module(exported, make_server, tmp_path):
    if exported and metrics_missing():
        pytest.skip(metrics_missing())
    srv = make_server(env=dict(metrics_env(), DIALOGS_ADMIN_SOCKET=str(tmp_path / "admin.sock")))
    # An event waiting since 90 s ago (its id's time), on a store where nothing
    # drains it: the module counts nothing delivered.
    event = uuid7_of(int(time.time() * 1000) - 90_000)
    admin_eval(srv, f"box.space.dialogs_outbox:insert({{require('uuid').fromstr('{event}'), 1}}) "
                    "and true")
    outbox = admin_eval(srv, STATS)["store"]["outbox"]
    assert outbox["backlog"] == 1 and outbox["oldest_age_s"] >= 90
    assert outbox["delivered"] == 0 and outbox["failures"] == 0
    # The module's own figures win where it has them.
    assert admin_eval(srv, FAKE_OUTBOX_MODULE) is True
    want = {"backlog": 7, "oldest_age_s": 3.5, "delivered": 40, "failures": 2}
    assert admin_eval(srv, STATS)["store"]["outbox"] == want
    if exported:
        samples = prometheus_samples(srv)
        assert value(samples, "dialogs_outbox_backlog") == 7
        assert value(samples, "dialogs_outbox_oldest_age_seconds") == 3.5
        assert value(samples, "dialogs_outbox_delivered_total") == 40
        assert value(samples, "dialogs_outbox_failures_total") == 2


def test_make_run_says_where_to_look(tmp_path):
    srv = config_harness.run_server(tmp_path / "run", env={"DIALOGS_SLOW_MS": "250"})
    _started.append(srv)
    srv.start()
    new_dialog(srv.connect(), None, str(new_user()), str(new_user()), "hello")
    log = srv.log_of_run()
    assert f"dialogs: serves the store's calls (README \"API\") on {srv.listen}" in log
    assert "dialogs: slow calls: logged from 250 ms (DIALOGS_SLOW_MS)" in log
    # The command it prints, run as printed (scripts/console on the server's own binary).
    command = re.search(r'^\s+scripts/console (\S+) "(require\(\'dialogs\'\)\.stats\(\))"$',
                        log, re.M)
    assert command is not None, log
    assert command.group(1) == str(srv.console) or \
        (config_harness.REPO_ROOT / command.group(1)).resolve() == srv.console.resolve()
    out = subprocess.run([srv.binary(), "scripts/console", command.group(1), command.group(2)],
                         cwd=config_harness.REPO_ROOT, capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    # The console's reply: one YAML document (PyYAML comes with asynctnt).
    stats = yaml.safe_load(out.stdout)[0]
    assert stats["procs"]["new_dialog"]["calls"] == 1 and stats["slow_ms"] == 250
    assert stats["store"]["messages"] == 1


def test_the_counts_go_on_across_a_reload_of_the_procedures(make_server, tmp_path):
    srv = make_server(env={"DIALOGS_ADMIN_SOCKET": str(tmp_path / "admin.sock")})
    conn = srv.connect()
    a, b = new_user(), new_user()
    new_dialog(conn, None, str(a), str(b), "before")
    assert admin_eval(srv, STATS)["procs"]["new_dialog"]["calls"] == 1
    # A new copy of the library for each (docs/operations.md, "Upgrading the module
    # without a restart"): it finds the process's counters and goes on.
    for proc in ("new_dialog", "dialogs_stats"):
        admin_eval(srv, f"box.schema.func.reload('{proc}') and true")
    new_dialog(conn, None, str(a), str(b), "after")
    expect_error(lambda: new_dialog(conn, None, str(a), str(b), ""), 1004)
    p = admin_eval(srv, STATS)["procs"]["new_dialog"]
    assert p["calls"] == 3 and p["errors"] == {"1004": 1}


# --- through a router -----------------------------------------------------------------


def test_router_and_storages_count_the_routed_calls(make_cluster):
    if vshard_missing():
        pytest.skip(vshard_missing())
    cluster = make_cluster({"s1": 1, "s2": 1}, env=metrics_env())
    expected = run_sequence(cluster.connect())
    router = cluster.routers[0]
    stats = admin_eval(router, STATS)
    # The router's own count of each client call, by outcome and code.
    for proc in ("new_dialog", "get_dialog"):
        e = expected[proc]
        errors = sum(e["errors"].values())
        assert stats["router"]["calls"][proc] == {"ok": e["calls"] - errors, "error": errors}
        assert {int(k): v for k, v in stats["router"]["errors"][proc].items()} == e["errors"]
    # A stable cluster: every call went the direct way.
    assert stats["router"]["fallbacks"] == {} and stats["router"]["retries"] == {}
    # The router's native check saw every call, and refused the bad ones itself ...
    route_errors: dict = {}
    for proc in ("new_dialog", "get_dialog"):
        for code, n in expected[proc]["errors"].items():
            route_errors[code] = route_errors.get(code, 0) + n
    check_stats_procs(stats, {"dialogs_route": {
        "calls": expected["new_dialog"]["calls"] + expected["get_dialog"]["calls"],
        "errors": route_errors}})
    assert "store" not in stats or stats["store"] is None
    # ... so the storages ran only the good ones, once each.
    storages = [admin_eval(s, STATS) for s in cluster.storages()]
    writes = sum(s["procs"].get("dialogs_storage_new", {}).get("calls", 0) for s in storages)
    reads = sum(s["procs"].get("dialogs_storage_get", {}).get("calls", 0) for s in storages)
    assert writes == 7 and reads == 3
    assert sum(s["store"]["messages"] for s in storages) == expected["messages"]
    assert sum(s["store"]["request_records"] for s in storages) == expected["request_records"]
    if metrics_missing():
        return
    samples = prometheus_samples(router)
    for name in ROUTER_METRICS + ["dialogs_calls_total", "dialogs_call_duration_seconds_bucket"]:
        assert name in samples, name
    for proc in ("new_dialog", "get_dialog"):
        e = expected[proc]
        errors = sum(e["errors"].values())
        assert value(samples, "dialogs_router_calls_total", proc=proc, outcome="ok") == \
            e["calls"] - errors
        assert value(samples, "dialogs_router_calls_total", proc=proc, outcome="error") == errors
        for code, n in e["errors"].items():
            assert value(samples, "dialogs_router_errors_total", proc=proc, code=code) == n
    assert value(samples, "dialogs_calls_total", proc="dialogs_route") == 17
    storage_samples = [prometheus_samples(s) for s in cluster.storages()]
    assert sum(value(s, "dialogs_messages") for s in storage_samples) == expected["messages"]
    assert sum(value(s, "dialogs_calls_total", proc="dialogs_storage_new") or 0
               for s in storage_samples) == 7


# --- slow calls ---------------------------------------------------------------------------


def slow_lines(srv) -> list:
    return SLOW_LINE.findall(srv.log_of_run())


def test_slow_calls_are_logged_with_sizes_never_the_text(make_server):
    # A threshold of 0 ms makes every call slow.
    srv = make_server(env={"DIALOGS_SLOW_MS": "0"})
    conn = srv.connect()
    a, b = new_user(), new_user()
    secret = "my secret words ✓"
    new_dialog(conn, None, str(a), str(b), secret)
    expect_error(lambda: get_dialog(conn, derived_dialog_id(a, b), {"limit": 0}), 1005)
    lines = wait_until(lambda: len(slow_lines(srv)) >= 2 and slow_lines(srv), 10,
                       "two slow-call lines")
    assert secret not in srv.log_text() and "secret" not in srv.log_text()
    (proc, ms, threshold, outcome, sizes), (proc2, _, _, outcome2, sizes2) = lines[:2]
    assert (proc, threshold, outcome) == ("new_dialog", "0", "ok")
    assert float(ms) >= 0
    # nil, two msgpack uuids given as 36-character strings, the text: sizes in bytes.
    text_bytes = len(secret.encode()) + 1  # a fixstr: one header byte below 32 bytes
    assert sizes == f"arguments 4 (1, 38, 38, {text_bytes} bytes), text {len(secret)} characters"
    assert (proc2, outcome2) == ("get_dialog", "error 1005")
    assert sizes2.startswith("arguments 2 (38, ")


def test_slow_call_lines_are_rate_limited_and_the_rest_summed_up(make_server):
    srv = make_server(env={"DIALOGS_SLOW_MS": "0"})
    conn = srv.connect()
    a, b = new_user(), new_user()
    burst = 5 * SLOW_LINES_PER_S
    started = time.monotonic()
    for i in range(burst):
        new_dialog(conn, None, str(a), str(b), f"m{i}")
    seconds = time.monotonic() - started
    logged = len(slow_lines(srv))
    # At most SLOW_LINES_PER_S in each second the burst touched.
    assert logged <= SLOW_LINES_PER_S * (int(seconds) + 2)
    assert logged < burst
    # The next line logged says how many were left out.
    summary = re.compile(r"; (\d+) more slow calls were not logged before this one")

    def reported() -> int:
        new_dialog(conn, None, str(a), str(b), "later")
        return sum(int(n) for n in summary.findall(srv.log_of_run()))

    # Every call left out of the burst is reported by a later line.
    wait_until(lambda: reported() >= burst - logged, 10, "the summary of the left-out lines")


@pytest.mark.parametrize("value", ["-1", "fast", "3600001", "1.5"])
def test_a_bad_slow_ms_is_refused_naming_it(tmp_path, value):
    out = run_init_expecting_exit(tmp_path, {"DIALOGS_SLOW_MS": value})
    assert out.returncode != 0
    assert "dialogs: DIALOGS_SLOW_MS: expected a whole number 0..3600000" in out.stderr


def test_the_threshold_can_be_changed_on_a_running_store(make_server, tmp_path):
    srv = make_server(env={"DIALOGS_ADMIN_SOCKET": str(tmp_path / "admin.sock")})
    conn = srv.connect()
    a, b = new_user(), new_user()
    new_dialog(conn, None, str(a), str(b), "quiet")
    assert admin_eval(srv, "require('dialogs.metrics').set_slow_ms(0)") is True
    new_dialog(conn, None, str(a), str(b), "loud")
    assert admin_eval(srv, STATS)["slow_ms"] == 0
    wait_until(lambda: slow_lines(srv), 10, "a slow-call line")
    assert admin_eval(srv, "require('dialogs.metrics').set_slow_ms(nil)") is True
    assert admin_eval(srv, STATS).get("slow_ms") is None
    # Granted to nobody: the application user may not read or set them.
    for name, args in (("dialogs_stats", []), ("dialogs_slow_calls", [0])):
        expect_error(lambda: conn.call(name, args), ER_ACCESS_DENIED)
