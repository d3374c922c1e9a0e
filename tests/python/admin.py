"""An operator's channel into a server under test, outside the product.

The product's ``init.lua`` listens on one URI, for the application user only. Tests
that must see the space itself (its size after a refused call, the grants, a module
reload) start the server through a tiny wrapper script instead: it ``dofile``s the
unchanged ``init.lua`` and then opens Tarantool's admin console on a unix socket in a
temporary directory. Nothing of this reaches the product: the wrapper exists only in
the test's own directory.

    srv, admin = start_admin_server(make_server, "name")
    admin.eval("box.space.dialogs:len()")   # -> 0

``eval`` runs one Lua expression as admin and returns its value, carried as hex of
JSON so that no console quoting can change it.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

from harness import INIT_LUA, Server

# The wrapper: the product's start-up, then the admin console. Paths come from the
# environment so that one text serves every server.
ADMIN_WRAPPER_LUA = """\
-- Test-only start script: init.lua as shipped, plus an admin console on a unix socket.
local init_lua = assert(os.getenv('DIALOGS_TEST_INIT_LUA'))
local socket_path = assert(os.getenv('DIALOGS_TEST_ADMIN_SOCKET'))
dofile(init_lua)
require('console').listen('unix/:' .. socket_path)
"""
CONNECT_TIMEOUT_S = 10.0
REPLY_END = b"\n...\n"


class AdminConsole:
    """A blocking client of Tarantool's text console, logged in as admin."""

    def __init__(self, path: Path, timeout: float = 60.0):
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._buf = b""
        # The greeting: two lines.
        while self._buf.count(b"\n") < 2:
            self._recv()
        self._buf = self._buf.split(b"\n", 2)[2]

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("admin console closed")
        self._buf += chunk

    def run(self, lua: str) -> str:
        """Send one line of Lua; return the console's raw YAML reply."""
        assert "\n" not in lua, "one line per request"
        self.sock.sendall(lua.encode() + b"\n")
        while REPLY_END not in self._buf:
            self._recv()
        reply, self._buf = self._buf.split(REPLY_END, 1)
        return reply.decode(errors="replace")

    def eval(self, expr: str):
        """The value of one Lua expression (JSON-representable), evaluated as admin.
        A Lua error becomes a RuntimeError with the console's reply."""
        reply = self.run(f"return string.hex(require('json').encode({expr}))")
        lines = reply.splitlines()
        if len(lines) != 2 or not lines[1].startswith("- "):
            raise RuntimeError(f"admin eval {expr!r}: {reply}")
        value = lines[1][2:].strip().strip("'\"")
        return json.loads(bytes.fromhex(value).decode())

    def close(self) -> None:
        self.sock.close()


def admin_wrapper(directory: Path) -> Path:
    path = Path(directory) / "admin_init.lua"
    path.write_text(ADMIN_WRAPPER_LUA)
    return path


def admin_kwargs(kwargs: dict) -> dict:
    """``Server`` keyword arguments that start it through the admin wrapper. The socket
    lives in a short temporary directory (unix socket paths are limited to about 100
    bytes)."""
    sock_dir = Path(tempfile.mkdtemp(prefix="dlg-admin-"))
    out = dict(kwargs)
    env = dict(out.pop("env", None) or {})
    env["DIALOGS_TEST_INIT_LUA"] = str(INIT_LUA)
    env["DIALOGS_TEST_ADMIN_SOCKET"] = str(sock_dir / "admin.sock")
    out["env"] = env
    out["init_lua"] = admin_wrapper(sock_dir)
    return out


def admin_socket(srv: Server) -> Path:
    return Path(srv.env["DIALOGS_TEST_ADMIN_SOCKET"])


def start_admin_server(make_server, name: str = "admin", **kwargs):
    """A server from conftest's ``make_server``, with an admin console: (Server,
    AdminConsole)."""
    srv = make_server(name, **admin_kwargs(kwargs))
    return srv, AdminConsole(admin_socket(srv))


def reconnect_admin(srv: Server) -> AdminConsole:
    """A new console, for instance after the server restarted."""
    return AdminConsole(admin_socket(srv))


def remove_socket_dir(srv: Server) -> None:
    shutil.rmtree(admin_socket(srv).parent, ignore_errors=True)
