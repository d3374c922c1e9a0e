"""The synchronous queue of a replica set under test, seen through the admin socket.

On servers where a write to a synchronous space needs an owner of the queue
(box.ctl.promote exists and box.info.synchro names the owner: 2.10+), init.lua's
writable instance takes it once its quorum is connected; these helpers let a test
wait for that instead of racing it.
"""

from __future__ import annotations

from harness import admin_eval, wait_until

OWNS_QUEUE_LOG_LINE = "dialogs: this instance owns the synchronous queue"

# True when srv takes writes: writable, and owner of the synchronous queue where
# the server needs one and the spaces are synchronous.
TAKES_WRITES = ("not box.info.ro and (box.ctl.promote == nil or box.info.synchro == nil "
                "or not box.space.dialogs.is_sync "
                "or box.info.synchro.queue.owner == box.info.id)")


def queue_needs_owner(srv) -> bool:
    """Whether srv's server needs an owner of the synchronous queue (probed)."""
    return admin_eval(srv, "box.ctl.promote ~= nil and box.info.synchro ~= nil "
                           "and box.info.synchro.queue.owner ~= nil") is True


def queue_owner(srv) -> int:
    return admin_eval(srv, "box.info.synchro.queue.owner")


def wait_master(srv, timeout: float = 30.0) -> None:
    """Until srv takes writes (see TAKES_WRITES)."""
    wait_until(lambda: admin_eval(srv, TAKES_WRITES), timeout, f"{srv.name} to take writes")
