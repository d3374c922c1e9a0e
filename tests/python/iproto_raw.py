"""A bare IPROTO client over a plain socket: what the connectors will not do.

Sends requests without waiting for replies (a burst, then a hang-up), sends argument
bytes exactly as given (msgpack a connector would refuse to produce), and reads the
raw reply code. Enough for abuse and crash tests; not a connector.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from typing import Optional, Tuple

import msgpack

GREETING_LEN = 128
SALT_LEN = 20
KEY_CODE, KEY_SYNC = 0x00, 0x01
KEY_TUPLE, KEY_FUNCTION_NAME, KEY_USER_NAME = 0x21, 0x22, 0x23
KEY_DATA, KEY_ERROR_24 = 0x30, 0x31
TYPE_AUTH, TYPE_CALL = 0x07, 0x0A
ERROR_FLAG = 0x8000


def _scramble(salt: bytes, password: str) -> bytes:
    hash1 = hashlib.sha1(password.encode()).digest()
    hash2 = hashlib.sha1(hash1).digest()
    mix = hashlib.sha1(salt[:SALT_LEN] + hash2).digest()
    return bytes(a ^ b for a, b in zip(mix, hash1))


class RawConnection:
    """One socket, logged in as ``user`` (or guest when ``user`` is None)."""

    def __init__(self, host: str, port: int, user: Optional[str] = None,
                 password: str = "", timeout: float = 30.0):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sync = 0
        self._buf = b""
        # Replies that arrived before they were asked for: pipelined calls need not
        # come back in the order they were sent.
        self._early: dict = {}
        greeting = self._read_exact(GREETING_LEN)
        self.salt = base64.b64decode(greeting[64:108].strip())
        if user is not None:
            body = {KEY_USER_NAME: user,
                    KEY_TUPLE: ["chap-sha1", _scramble(self.salt, password)]}
            code, payload = self.reply(self.send(TYPE_AUTH, msgpack.packb(body)))
            if code != 0:
                raise PermissionError(payload)

    def send(self, request_type: int, body: bytes) -> int:
        """Send one request; return its sync without waiting for the reply."""
        self.sync += 1
        header = msgpack.packb({KEY_CODE: request_type, KEY_SYNC: self.sync})
        self.sock.sendall(b"\xce" + struct.pack(">I", len(header) + len(body))
                          + header + body)
        return self.sync

    def send_call(self, function: str, args_msgpack: bytes) -> int:
        """CALL ``function`` with ``args_msgpack``, the encoded argument array."""
        body = (b"\x82" + msgpack.packb(KEY_FUNCTION_NAME) + msgpack.packb(function)
                + msgpack.packb(KEY_TUPLE) + args_msgpack)
        return self.send(TYPE_CALL, body)

    def reply(self, sync: int) -> Tuple[int, object]:
        """The reply to ``sync``: (0, data) or (error code, message). Replies to other
        requests read meanwhile are kept for their own ``reply`` call."""
        while sync not in self._early:
            got_sync, reply = self._read_reply()
            self._early[got_sync] = reply
        return self._early.pop(sync)

    def _read_reply(self) -> Tuple[int, Tuple[int, object]]:
        size = struct.unpack(">I", self._read_exact(5)[1:])[0]
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(self._read_exact(size))
        header = next(unpacker)
        body = next(unpacker, {})
        code = header[KEY_CODE]
        if code & ERROR_FLAG:
            return header[KEY_SYNC], (code & ~ERROR_FLAG, body.get(KEY_ERROR_24))
        return header[KEY_SYNC], (0, body.get(KEY_DATA))

    def call(self, function: str, args_msgpack: bytes) -> Tuple[int, object]:
        return self.reply(self.send_call(function, args_msgpack))

    def abort(self) -> None:
        """Hang up at once, replies unread (RST if the kernel still holds data)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out
