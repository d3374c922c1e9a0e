"""Tarantool 3 instances started the way docs/operations.md
("Tarantool 3: configuration and the `dialogs` role") starts them.

`ConfigServer` is a `harness.Server` whose process is not ``tarantool init.lua`` but
either ``tarantool --config FILE --name NAME`` (a shipped configuration, from
`Cluster`) or ``scripts/run`` (what `make run` executes). Everything else (waiting
until the application user can log in, stopping by PID, the log, connections,
`harness.admin_eval` through the console socket) is the harness's, but for when an
instance that runs a configuration is ready: Tarantool 3 binds iproto.listen and
creates the configuration's users before it applies the roles, so the application
user logs in while the role is still setting the store up (a call in that moment
is refused for access, a config:reload() with "already in progress"). Such an
instance is ready once `config:info().status` says its start is over (`ready`, or
`check_warnings`), the signal Tarantool documents (also broadcast as the
`config.info` event); it is asked on the console socket.

`Cluster` copies one of the repository's configuration files (config/*.yaml) into a
short temporary directory, changing nothing but the loopback ports (to free ones)
and, when asked, single lines a test edits on purpose; each instance runs in its own
directory there, so the file's relative data paths stay inside it. The role is found
as a user's checkout finds it: LUA_PATH points at the repository.

The server binary is $TARANTOOL (default: `tarantool` on PATH). Tests of the
configuration skip themselves, with the reason, when that server has no `config`
module (Tarantool before 3.0, e.g. Debian's 2.6.0 in CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Optional

import harness
from dialogs_api import multireturn_of_binary, set_multireturn
from harness import (DEFAULT_PASSWORD, REPLICATION_PASSWORD, REPO_ROOT, Server, ServerError,
                     admin_eval)

TARANTOOL = os.environ.get("TARANTOOL") or "tarantool"
CONFIG_DIR = REPO_ROOT / "config"
RUN_SCRIPT = REPO_ROOT / "scripts" / "run"
# The probe scripts/run makes: the declarative configuration exists.
CONFIG_PROBE = ("os.exit(pcall(require, 'config') and "
                "type(require('config').get) == 'function' and 0 or 1)")
CONSOLE_SOCKET = "tarantool.control"
# A shipped address: 127.0.0.1 and a port of the 33xx range the files use.
ADDRESS = re.compile(r"127\.0\.0\.1:(33\d\d)")
# config:info().status once an instance's start (or reload) is over: every applier
# and role has run (`check_warnings`: with a warning alert, e.g. a privilege the
# credentials could not grant yet).
CONFIG_STARTED = ("ready", "check_warnings")


def has_config_module(binary: str = TARANTOOL) -> bool:
    """Whether the server has Tarantool 3's declarative configuration (asked of the
    binary itself, as scripts/run does)."""
    out = subprocess.run([binary, "-e", CONFIG_PROBE], stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=60)
    return out.returncode == 0


def no_config_reason(binary: str = TARANTOOL) -> str:
    return (f"{binary} has no declarative configuration (no `config` module: "
            "Tarantool 3.0+ only); set TARANTOOL to a 3.x server to run this")


def lua_path() -> str:
    """LUA_PATH for a checkout: the role (dialogs/init.lua) and its modules."""
    return f"{REPO_ROOT}/?.lua;{REPO_ROOT}/?/init.lua;;"


class ConfigServer(Server):
    """One instance whose process is ``command`` (run in ``cwd``), configured by a
    Tarantool 3 configuration; ``console`` is its admin console socket (what
    harness.admin_eval talks to)."""

    def __init__(self, base_dir: Path, *, name: str, port: int, command: list,
                 cwd: Path, console: Path, env: Optional[Mapping[str, Optional[str]]] = None,
                 password: str = DEFAULT_PASSWORD, config_road: Optional[bool] = None):
        e = {
            "TARANTOOL": TARANTOOL,
            "LUA_PATH": lua_path(),
            # As docs/operations.md says for a checkout: the library on the search path from
            # the start (the role adds it too, but only once it is applied).
            "LUA_CPATH": f"{harness.lib_dir()}/?.so;;",
            "DIALOGS_PASSWORD": password,
            "DIALOGS_REPLICATION_PASSWORD": REPLICATION_PASSWORD,
            "DIALOGS_ADMIN_SOCKET": str(console),
        }
        e.update(env or {})
        super().__init__(base_dir, name=name, port=port, password=password,
                         ready_log_line=None, env=e)
        # The DIALOGS_* defaults harness.Server adds are init.lua's; a configuration
        # takes only what the caller passed.
        for k in ("DIALOGS_LISTEN", "DIALOGS_DATA_DIR", "DIALOGS_LIB_DIR", "DIALOGS_USER",
                  "DIALOGS_MEMTX_MEMORY", "DIALOGS_WAL_MODE"):
            if not (env and k in env):
                self.env.pop(k, None)
        self.command = command
        self.cwd = cwd
        self.console = console
        # Whether the process runs a Tarantool 3 configuration (ready by its
        # status, see the module's docstring): `--config` on the command line
        # unless the caller knows better (scripts/run picks its road itself).
        self.config_road = "--config" in command if config_road is None else config_road

    def child_env(self) -> dict:
        # DIALOGS_ADMIN_SOCKET is in self.env only for harness.admin_eval: the
        # console is the configuration's (console.socket), not a variable's.
        env = super().child_env()
        env.pop("DIALOGS_ADMIN_SOCKET", None)
        return env

    def binary(self) -> str:
        """The Tarantool this server runs: $TARANTOOL of its environment (a path, or a
        name looked up on PATH)."""
        name = self.env.get("TARANTOOL") or TARANTOOL
        return shutil.which(name) or name

    def config_status(self) -> Optional[str]:
        """`config:info().status` of the running instance, asked on its console, or
        None while the console does not answer yet."""
        if not self.console.exists():
            return None
        try:
            return admin_eval(self, "require('config'):info().status", timeout=10)
        except (OSError, ServerError, RuntimeError, AssertionError):
            return None

    def _set_up_done(self) -> bool:
        # The application user logs in (harness.Server's check) ...
        if not super()._set_up_done():
            return False
        # ... and, on a configuration, its start (every role applied) is over.
        return not self.config_road or self.config_status() in CONFIG_STARTED

    def start(self, *, wait: bool = True, timeout: float = harness.START_TIMEOUT_S):
        # How this server sends a C function's results (dialogs_api's reply shapes).
        set_multireturn((self.host, self.port), multireturn_of_binary(self.binary()))
        if self.is_running():
            raise ServerError(f"{self.name}: already running as pid {self.pid}")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts} ===\n".encode())
            log.flush()
            self._run_offset = log.tell()
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.child_env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout)
        return self

    def run_to_exit(self, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run the command once in the foreground; for a configuration it must refuse."""
        try:
            return subprocess.run(self.command, cwd=self.cwd, env=self.child_env(),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ServerError(f"{self.name}: kept running:\n{e.stdout}\n{e.stderr}") from e


class Cluster:
    """A copy of config/<file> with free loopback ports, and its instances."""

    def __init__(self, config_file: str, *, edit=None, on_server=None):
        # Short: a unix socket path (the console) holds at most 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="dlg-"))
        self.text = (CONFIG_DIR / config_file).read_text()
        self.ports = {}
        for shipped in sorted(set(ADDRESS.findall(self.text))):
            self.ports[shipped] = harness.free_port()
        self.text = ADDRESS.sub(lambda m: f"127.0.0.1:{self.ports[m.group(1)]}", self.text)
        if edit is not None:
            self.text = edit(self.text)
        self.path = self.dir / "config.yaml"
        self.write()
        self.servers: dict = {}
        self.on_server = on_server

    def write(self, text: Optional[str] = None) -> None:
        if text is not None:
            self.text = text
        self.path.write_text(self.text)

    def port_of(self, name: str) -> int:
        """The port of instance `name`: the one on the line after its name."""
        if len(self.ports) == 1:
            return next(iter(self.ports.values()))
        m = re.search(rf"^\s+{re.escape(name)}:\s*\n(?:\s+\w+:\s*\n){{1,2}}"
                      rf"\s+- uri: 127\.0\.0\.1:(\d+)", self.text, re.M)
        if m is None:
            raise KeyError(f"no address for instance {name} in {self.path}")
        return int(m.group(1))

    def server(self, name: str, **kwargs) -> ConfigServer:
        """Instance `name` (not started): `tarantool --config <copy> --name <name>`."""
        base = self.dir / name
        base.mkdir(exist_ok=True)
        data = base / "data"
        console = (data / name if self.has_instance_dirs() else data) / CONSOLE_SOCKET
        srv = ConfigServer(base, name=name, port=self.port_of(name),
                           command=[TARANTOOL, "--config", str(self.path), "--name", name],
                           cwd=base, console=console, **kwargs)
        self.servers[name] = srv
        if self.on_server is not None:
            self.on_server(srv)
        return srv

    def has_instance_dirs(self) -> bool:
        return "data/{{ instance_name }}" in self.text

    def stop(self) -> None:
        for srv in self.servers.values():
            srv.stop()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_server(base_dir: Path, env: Optional[Mapping[str, Optional[str]]] = None,
               name: str = "run") -> ConfigServer:
    """`scripts/run` (what `make run` executes after building) on TARANTOOL, with its
    data and console in base_dir (DIALOGS_DATA_DIR) and a free port (DIALOGS_LISTEN)."""
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    data = base_dir / "data"
    e = {
        "DIALOGS_LISTEN": f"127.0.0.1:{port}",
        "DIALOGS_DATA_DIR": str(data),
        "DIALOGS_LIB_DIR": str(harness.lib_dir()),
        "DIALOGS_MEMTX_MEMORY": str(harness.DEFAULT_MEMTX_MEMORY),
        "LUA_PATH": None,
        "LUA_CPATH": None,
    }
    e.update(env or {})
    # scripts/run takes the configuration's road where the server has it.
    return ConfigServer(base_dir, name=name, port=port, command=[str(RUN_SCRIPT)],
                        cwd=REPO_ROOT, console=data / CONSOLE_SOCKET, env=e,
                        config_road=has_config_module(e.get("TARANTOOL") or TARANTOOL))
