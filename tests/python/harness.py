"""A dialogs server under test: one `tarantool init.lua` process, as a user runs it.

`Server` starts the repository's own ``init.lua`` on a free 127.0.0.1 port, in a data
directory of its own, configured only through the ``DIALOGS_*`` environment variables
that a user would set. It waits until the application user can log in, and stops the
process by PID: politely (SIGTERM, then SIGKILL after a timeout) or brutally (SIGKILL,
for crash tests). A stopped server starts again on the same data directory and port.

Everything the process prints (Tarantool logs to stderr) goes to ``server.log`` in the
server's directory; every start appends to it, after a ``=== start N ===`` line, so a
test can look at one run (`log_of_run`) or the whole history (`log_text`). The pytest
fixtures in ``conftest.py`` attach these logs to the report of a failing test.

Several servers may run at once (each has its own port and directory), so replication
and failover tests can build on this. Usable without pytest too::

    with Server(Path(tempfile.mkdtemp())) as srv:
        conn = srv.connect()
        print(conn.call("new_dialog", (None, a, b, "hi")).data[0])
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from typing import Iterable, Mapping, Optional

import tarantool

from dialogs_api import set_server_binary_lookup

# tests/python/harness.py -> the repository root, wherever the checkout lives.
REPO_ROOT = Path(__file__).resolve().parents[2]
INIT_LUA = REPO_ROOT / "init.lua"
DEFAULT_LIB_DIR = REPO_ROOT / "target" / "dialogs"

MIB = 1024 * 1024
# Small enough for several instances on one test machine, large enough for any test.
DEFAULT_MEMTX_MEMORY = 256 * MIB
DEFAULT_USER = "dialogs"
# Deliberately not init.lua's development default, so a test that passes proves the
# password from the environment is the one in force.
DEFAULT_PASSWORD = "e2e-secret-pw"
# README: with DIALOGS_PASSWORD unset on loopback, the application user's password.
DEV_PASSWORD = "dialogs"

# Logged by init.lua (at level info) after the schema, the functions and the user are
# in place; a login alone can succeed a moment earlier (between user creation and
# grants).
READY_LOG_LINE = "dialogs: listening on"
ER_ACCESS_DENIED = 42

START_TIMEOUT_S = 30.0
# How many times a first start may retry on a new port after losing the race for one.
PORT_RETRIES = 3
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.02
READY_PROBE_TIMEOUT_S = 1.0


# Prints each record of each .xlog file in a directory as one JSON line.
WAL_DUMP_LUA = """
local fio = require('fio')
local json = require('json').new()
json.cfg{encode_use_tostring = true, encode_invalid_as_nil = true}
local files = fio.glob(fio.pathjoin(arg[1], '*.xlog'))
table.sort(files)
for _, f in ipairs(files) do
    for lsn, rec in require('xlog').pairs(f) do
        print(json.encode({file = fio.basename(f), lsn = lsn,
                           header = rec.HEADER, body = rec.BODY}))
    end
end
os.exit(0)
"""


def tarantool_binary() -> str:
    """The Tarantool under test: $TARANTOOL (`make test TARANTOOL=...` sets it to an
    absolute path), else the `tarantool` first on PATH."""
    return os.environ.get("TARANTOOL") or shutil.which("tarantool") or "tarantool"


def server_description(binary: Optional[str] = None) -> str:
    """`path (first line of --version)`, as `make test` states the server it tested."""
    binary = binary or tarantool_binary()
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
        version = out.splitlines()[0] if out else "no --version output"
    except OSError as e:
        version = f"does not run: {e}"
    return f"{binary} ({version})"


def _tarantool_first_on_path() -> None:
    """Makes `tarantool` by name mean $TARANTOOL in this process and its children.

    The harness starts servers (and tests run tools such as scripts/rejoin) by the
    name `tarantool`, so that a test can give one server another binary through its
    environment's PATH. When $TARANTOOL names another binary than the one first on
    PATH (pytest run by hand with TARANTOOL=...), a directory holding a `tarantool`
    link to it goes first on PATH. Under `make test` PATH already says so."""
    chosen = os.environ.get("TARANTOOL")
    found = shutil.which("tarantool")
    if not chosen or (found and os.path.realpath(found) == os.path.realpath(chosen)):
        return
    link_dir = Path(tempfile.mkdtemp(prefix="dialogs-tarantool-"))
    atexit.register(shutil.rmtree, link_dir, True)
    (link_dir / "tarantool").symlink_to(os.path.realpath(chosen))
    os.environ["PATH"] = f"{link_dir}{os.pathsep}{os.environ.get('PATH', '')}"


_tarantool_first_on_path()


class ServerError(RuntimeError):
    """The server did not start, did not stop, or died; the message carries its log."""


def lib_dir() -> Path:
    """The built module directory: $DIALOGS_LIB_DIR, else the `make build` output."""
    return Path(os.environ.get("DIALOGS_LIB_DIR") or DEFAULT_LIB_DIR).resolve()


def module_built() -> bool:
    """True when `make build` has produced the procedures init.lua needs."""
    d = lib_dir()
    return all((d / f"{name}.so").exists() for name in ("new_dialog", "get_dialog"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(text: str, lines: int = 200) -> str:
    return "\n".join(text.splitlines()[-lines:])


# Every Server made, oldest first: which binary runs behind a host and port.
_SERVERS: list = []


def _binary_of(server_key) -> Optional[str]:
    """The binary of the newest Server on `server_key` (dialogs_api's reply shapes)."""
    for ref in reversed(_SERVERS):
        srv = ref()
        if srv is not None and (srv.host, srv.port) == tuple(server_key):
            return srv.binary()
    return None


set_server_binary_lookup(_binary_of)


class Server:
    """One dialogs instance: a `tarantool init.lua` child process and its directory.

    ``base_dir`` holds ``data/`` (snapshots and WAL: ``DIALOGS_DATA_DIR``) and
    ``server.log``. ``env`` adds or overrides environment variables (``DIALOGS_*`` or
    anything else); a value of None removes the variable. ``password=None`` leaves
    DIALOGS_PASSWORD unset, so init.lua's loopback development password applies and
    the harness logs in with that. The constructor starts nothing: call `start` (or
    use the server as a context manager).
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        name: str = "dialogs",
        port: Optional[int] = None,
        user: str = DEFAULT_USER,
        password: Optional[str] = DEFAULT_PASSWORD,
        memtx_memory: int = DEFAULT_MEMTX_MEMORY,
        wal_mode: str = "write",
        lib: Optional[Path] = None,
        env: Optional[Mapping[str, Optional[str]]] = None,
        init_lua: Path = INIT_LUA,
        ready_log_line: Optional[str] = READY_LOG_LINE,
    ):
        self.name = name
        self.base_dir = Path(base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "server.log"
        self.host = "127.0.0.1"
        self._auto_port = port is None
        self._served = False  # has any start become ready (then the port is ours)
        self.port = port or free_port()
        self.user = user
        self.password = DEV_PASSWORD if password is None else password
        self.init_lua = Path(init_lua)
        self.ready_log_line = ready_log_line
        self.env = {
            "DIALOGS_LISTEN": f"{self.host}:{self.port}",
            "DIALOGS_DATA_DIR": str(self.data_dir),
            "DIALOGS_LIB_DIR": str(lib or lib_dir()),
            "DIALOGS_USER": user,
            "DIALOGS_PASSWORD": password,
            "DIALOGS_MEMTX_MEMORY": str(memtx_memory),
            "DIALOGS_WAL_MODE": wal_mode,
        }
        self.env.update(env or {})
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0
        self._run_offset = 0  # where the current run's log begins
        self._connections: list = []
        _SERVERS.append(weakref.ref(self))

    # --- the process ----------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def child_env(self) -> dict:
        """The environment the server process gets: ours, minus inherited DIALOGS_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIALOGS_")}
        env.update({k: v for k, v in self.env.items() if v is not None})
        return env

    def binary(self) -> str:
        """The Tarantool this server runs: TARANTOOL given in its ``env``, else
        `tarantool` on its environment's PATH (so a test can give one server another
        binary either way)."""
        path = self.child_env().get("PATH")
        name = self.env.get("TARANTOOL") or "tarantool"
        return shutil.which(name, path=path) or name

    def start(self, *, wait: bool = True, timeout: float = START_TIMEOUT_S) -> "Server":
        """Spawn the server; with ``wait``, return once it serves (else ServerError)."""
        if self.is_running():
            raise ServerError(f"{self.name}: already running as pid {self.pid}")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts} ===\n".encode())
            log.flush()
            self._run_offset = log.tell()
            self.process = subprocess.Popen(
                [self.binary(), str(self.init_lua)],
                cwd=self.base_dir,  # anything written relative lands here
                env=self.child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            try:
                self.wait_ready(timeout)
            except ServerError:
                if not self._take_another_port():
                    raise
                return self.start(wait=wait, timeout=timeout)
        return self

    def _take_another_port(self) -> bool:
        """After a first start lost its free port to another process (the port was
        free when chosen, taken by the time the server bound it): pick a new one."""
        if not (self._auto_port and not self._served and self.starts <= PORT_RETRIES
                and "Address already in use" in self.log_of_run()):
            return False
        self.port = free_port()
        self.env["DIALOGS_LISTEN"] = self.listen
        return True

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll until the application user can log in and init.lua's set-up is done.

        Done means the ready line is in the log; when the log level hides it (below
        5, info), that a read-only probe call is no longer refused for access (the
        user exists a moment before its grants do)."""
        deadline = time.monotonic() + timeout
        last_error: object = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ServerError(
                    f"{self.name}: exited with code {self.process.returncode} while "
                    f"starting\n{self.log_of_run()}"
                )
            try:
                if self._set_up_done():
                    self._served = True
                    return
            except (tarantool.error.NetworkError, tarantool.error.DatabaseError) as e:
                last_error = e
            time.sleep(POLL_INTERVAL_S)
        raise ServerError(
            f"{self.name}: not ready after {timeout}s (last error: {last_error})\n"
            f"{tail(self.log_of_run())}"
        )

    def _logs_info(self) -> bool:
        """Does the server's log level (DIALOGS_LOG_LEVEL, default 5) show info lines?"""
        level = self.env.get("DIALOGS_LOG_LEVEL")
        try:
            return level is None or int(level) >= 5
        except ValueError:
            return False

    def _set_up_done(self) -> bool:
        if self.ready_log_line is not None and self._logs_info():
            # The line is written after the set-up (an upgrade, the grants); a
            # server that listens already may still be in the middle of it.
            if self.ready_log_line not in self.log_of_run():
                return False
        logged = self.ready_log_line is None or self.ready_log_line in self.log_of_run()
        # Raises until the port listens and the user exists; short, so that a process
        # that died meanwhile (or a stranger on the port) is noticed soon.
        conn = self.connect(connection_timeout=READY_PROBE_TIMEOUT_S,
                            socket_timeout=READY_PROBE_TIMEOUT_S)
        try:
            if logged:
                return True
            try:
                conn.call("get_dialog", [str(uuid.uuid4())])
            except tarantool.error.DatabaseError as e:
                if isinstance(e, tarantool.error.NetworkError) or e.code == ER_ACCESS_DENIED:
                    raise
            return True
        finally:
            conn.close()
            self._connections.remove(conn)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait; SIGKILL if still alive after ``timeout``. Returns the exit code."""
        if self.process is None:
            return 0
        self._close_connections()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL (kill -9): the crash a test wants to survive. Returns the exit code."""
        if self.process is None:
            return 0
        self._close_connections()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def restart(self, *, hard: bool = False, timeout: float = START_TIMEOUT_S) -> "Server":
        """Stop (SIGKILL when ``hard``, else SIGTERM) and start on the same dir and port."""
        self.kill() if hard else self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> "Server":
        return self if self.is_running() else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the log ----------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything every run of this server has printed."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_of_run(self) -> str:
        """What the current (or last) run has printed."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._run_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_errors(self) -> list:
        """Error and fatal lines (Tarantool's `E>` / `F>` / `!>` levels) of the current run."""
        return [l for l in self.log_of_run().splitlines() if re.search(r" [EF!]> ", l)]

    # --- the data on disk ---------------------------------------------------------------

    def wal_records(self) -> list:
        """Every record in the data directory's WAL files, oldest first, as dicts
        {"file", "lsn", "header": {"type", ...}, "body": {"space_id", "tuple", ...}}
        (uuids as strings). Read with the same tarantool binary; stop the server
        first, so that no file is still being written."""
        script = self.base_dir / "wal_dump.lua"
        script.write_text(WAL_DUMP_LUA)
        out = subprocess.run(["tarantool", str(script), str(self.data_dir)],
                             capture_output=True, text=True, timeout=60, check=True)
        return [json.loads(line) for line in out.stdout.splitlines() if line]

    # --- clients ----------------------------------------------------------------------

    def connect(self, user: Optional[str] = ..., password: Optional[str] = ...,
                **kwargs) -> tarantool.Connection:
        """A `tarantool` connector connection, logged in as the application user by
        default; ``user=None`` connects as guest. Fails at once instead of retrying.
        The harness closes it when the server stops."""
        if user is ...:
            user = self.user
        if password is ...:
            password = self.password
        kwargs.setdefault("reconnect_max_attempts", 0)
        kwargs.setdefault("connection_timeout", 5)
        kwargs.setdefault("socket_timeout", 30)
        conn = tarantool.Connection(self.host, self.port, user=user, password=password,
                                    **kwargs)
        self._connections.append(conn)
        return conn

    def _close_connections(self) -> None:
        for c in self._connections:
            try:
                c.close()
            except Exception:  # already broken: nothing to release
                pass
        self._connections.clear()


def run_init_expecting_exit(base_dir: Path, env: Mapping[str, Optional[str]],
                            timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Run init.lua with a configuration it must refuse; return its exit and output.

    ``env`` is applied on top of a valid configuration (free port, own data dir, the
    built module, a password). If the server starts serving instead of exiting, it is
    killed after ``timeout`` and ServerError is raised with its output.
    """
    srv = Server(base_dir, env=env)
    try:
        return subprocess.run(
            ["tarantool", str(INIT_LUA)], cwd=srv.base_dir, env=srv.child_env(),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise ServerError(f"init.lua kept running with env {dict(env)}:\n"
                          f"{e.stdout}\n{e.stderr}") from e


def servers_log_sections(servers: Iterable[Server]) -> list:
    """(title, text) pairs for a test report: the tail of each server's log."""
    return [(f"dialogs server log: {s.name} (pid {s.pid}, {s.listen}, {s.log_path})",
             tail(s.log_text())) for s in servers]


# --- replica sets (test_replication*.py) ----------------------------------------------
# Several Servers configured as one Tarantool replica set through init.lua's
# replication variables (docs/operations.md, "Replication"), plus the admin console that
# DIALOGS_ADMIN_SOCKET opens, for what only an operator may do.

REPLICATION_PASSWORD = "repl-secret-pw"
# How long a starting instance waits for its peers (bootstrap waits this long for
# every listed peer that is down, so short keeps the tests fast).
REPLICATION_CONNECT_TIMEOUT_S = 2.0
ADMIN_SOCKET_NAME = "admin.sock"
CONSOLE_REPLY_END = b"\n...\n"


def replica_set(make, names: Iterable[str], *, sync_quorum: Optional[int] = None,
                env: Optional[Mapping[str, Optional[str]]] = None) -> list:
    """Servers (not started) for one replica set: fixed free ports, a full mesh of
    peers, the first name writable and the others read-only replicas, each with an
    admin socket. ``make(name, start=False, **kwargs)`` builds a Server (conftest's
    make_server)."""
    names = list(names)
    ports = [free_port() for _ in names]
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    servers = []
    for i, (name, port) in enumerate(zip(names, ports)):
        e = {
            "DIALOGS_REPLICATION": peers,
            "DIALOGS_REPLICATION_PASSWORD": REPLICATION_PASSWORD,
            "DIALOGS_READ_ONLY": "false" if i == 0 else "true",
            "DIALOGS_REPLICATION_CONNECT_TIMEOUT": str(REPLICATION_CONNECT_TIMEOUT_S),
            "DIALOGS_SYNC_QUORUM": str(sync_quorum) if sync_quorum else None,
        }
        e.update(env or {})
        srv = make(name, start=False, port=port, env=e)
        srv.env["DIALOGS_ADMIN_SOCKET"] = str(srv.base_dir / ADMIN_SOCKET_NAME)
        servers.append(srv)
    return servers


def admin_socket(srv: Server) -> Path:
    return Path(srv.env["DIALOGS_ADMIN_SOCKET"])


def admin_eval(srv: Server, expr: str, timeout: float = 30.0):
    """The value of one Lua expression evaluated as admin on `srv`, through its
    DIALOGS_ADMIN_SOCKET console. The value travels as hex of JSON, so that no YAML
    or console quoting changes it. A Lua error raises RuntimeError."""
    lua = ("local ok, v = pcall(function() return " + expr + " end) "
           "if not ok then v = tostring(v) end "
           "local j = require('json').encode({ok = ok, v = v}) "
           "return (j:gsub('.', function(c) return string.format('%02x', c:byte()) end))")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        # A restarted server may serve its users a moment before init.lua has
        # opened the socket.
        wait_until(lambda: s.connect_ex(str(admin_socket(srv))) == 0, 10,
                   f"{srv.name}: admin socket")
        buf = b""
        while buf.count(b"\n") < 2:  # the greeting: two lines
            buf += s.recv(4096)
        buf = buf.split(b"\n", 2)[2]
        s.sendall(lua.encode() + b"\n")
        while CONSOLE_REPLY_END not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ServerError(f"{srv.name}: admin console closed")
            buf += chunk
    reply = buf.split(CONSOLE_REPLY_END, 1)[0].decode()
    m = re.search(r"^- ([0-9a-f]+)$", reply, re.M)
    if m is None:
        raise ServerError(f"{srv.name}: unexpected console reply {reply!r}")
    out = json.loads(bytes.fromhex(m.group(1)))
    if not out["ok"]:
        raise RuntimeError(f"{srv.name}: {expr}: {out['v']}")
    return out.get("v")


def wait_until(predicate, timeout: float, what: str, interval: float = POLL_INTERVAL_S):
    """Poll `predicate` until it returns a true value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
