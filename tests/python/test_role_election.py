"""config/replicaset-election.yaml survives the loss of its leader (docs/operations.md,
"Tarantool 3: configuration and the `dialogs` role"): three instances started from the shipped file (only
the ports changed), kill -9 of the elected leader under write load from clients
that retry with request_id on the next address. A new leader is elected and writes
resume; every acknowledged message is stored exactly once, in order, and nothing
else; the killed leader, started again with the same command, rejoins as a
follower. `measure_role_failover.py` repeats the kill for the timings.
"""

from __future__ import annotations

import pytest
import tarantool

from config_harness import Cluster, has_config_module, no_config_reason
from conftest import forget_logs_of, report_logs_of
from dialogs_api import READ_ONLY, get_dialog, new_dialog, new_user, walk_dialog
from election import CONFIG_FILE, SET_UP_LINE, failover_run, leader_of, stored_problems
from harness import (DEFAULT_PASSWORD, REPLICATION_PASSWORD, admin_eval, module_built,
                     wait_until)

pytestmark = [
    pytest.mark.skipif(not module_built(), reason="run `make build` first"),
    pytest.mark.skipif(not has_config_module(), reason=no_config_reason()),
]

PAGE = 1000


def stored(conn, dialog) -> list:
    return [t for page in walk_dialog(conn, dialog, PAGE) for t in page]


def test_leader_kill_under_load_loses_nothing_acknowledged(capsys):
    cluster = Cluster(CONFIG_FILE, on_server=report_logs_of)
    try:
        run = failover_run(cluster)
        for w in run.writers:
            assert w.error is None, f"{w.name}: {w.error!r}"
            assert not w.is_alive()
        assert run.acked_before_kill > 0
        assert run.new_leader is not run.old_leader
        # The role noticed the promotion and ran its (idempotent) set-up there.
        wait_until(lambda: SET_UP_LINE in run.new_leader.log_of_run(), 30,
                   "the role's set-up on the new leader")

        # Every acknowledged message once, in order, ids increasing; nothing else.
        assert stored_problems(run) == []
        conn = run.new_leader.connect()
        assert sum(w.retries for w in run.writers) > 0  # the kill was felt

        # The killed leader, started again as it was, follows the new one.
        old = run.old_leader
        old.start()
        wait_until(lambda: admin_eval(old, "box.info.election.state") == "follower"
                   and admin_eval(old, "box.info.ro") is True, 60, "the old leader follows")
        oc = old.connect()
        for w in run.writers:
            wait_until(lambda: [str(t[0]) for t in stored(oc, w.dialog)]
                       == [a[1] for a in w.acked], 30, f"{w.name}'s dialog on the old leader")
        with pytest.raises(tarantool.error.DatabaseError) as e:
            new_dialog(oc, None, str(new_user()), str(new_user()), "to the old leader")
        assert e.value.args[0] == READ_ONLY
        assert leader_of(run.servers.values()) is run.new_leader
        w = run.writers[0]
        last = new_dialog(conn, None, str(w.a), str(w.b), "after the rejoin")
        wait_until(lambda: [str(t[0]) for t in get_dialog(oc, w.dialog, {"limit": 1,
                   "reverse": True})] == [last], 30, "a new write on the old leader")
        # No set-up ran on it while it followed.
        assert SET_UP_LINE not in old.log_of_run()
        # Neither password reached a log (peers are logged as user@host).
        for s in run.servers.values():
            assert DEFAULT_PASSWORD not in s.log_text()
            assert REPLICATION_PASSWORD not in s.log_text()
        with capsys.disabled():
            print(f"\nelection failover: kill -9 -> first acknowledged write "
                  f"{run.first_ack_after_kill:.2f} s; {sum(len(w.acked) for w in run.writers)}"
                  f" writes acknowledged, {sum(w.retries for w in run.writers)} retries")
    finally:
        cluster.remove()
        forget_logs_of(cluster.servers.values())
