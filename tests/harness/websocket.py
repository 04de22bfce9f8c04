"""The server side of Kubernetes' exec stream: a WebSocket (RFC 6455) speaking the channel subprotocols.

What ``kubernetes.stream.stream(api.connect_get_namespaced_pod_exec, ...)`` expects of kube-apiserver
(k8s.io/apiserver wsstream + the kubelet's remotecommand server):

* the client offers subprotocols in ``Sec-WebSocket-Protocol`` (the Python client: ``v5.channel.k8s.io,
  v4.channel.k8s.io``); the server takes the first one, in the client's order, that it supports, and
  names it in its 101 answer;
* binary frames whose first byte is the channel: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize
  (``base64.`` variants: text frames, the channel as an ASCII digit, the payload base64);
* right after the upgrade, one empty frame on the lowest channel the client asked for (stdout, else
  stderr, else error) tells the client the stream is open;
* v4 and v5: when the command ends, the error channel carries a JSON ``metav1.Status``:
  ``{"metadata":{},"status":"Success"}``, or ``Failure`` with reason ``NonZeroExitCode`` and the exit code
  as ``details.causes[0].message``, or an ``InternalError``; then the server closes the WebSocket;
* v5 only: the client may send ``[255, channel]`` to close one of its channels (stdin: EOF).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import select
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255
# newest first: what the server supports (kube-apiserver v1.30 with the stream translator)
SUPPORTED = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io",
             "base64.channel.k8s.io")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def negotiate(offered: str, supported: Sequence[str] = SUPPORTED) -> str | None:
    """The first protocol the client offered that the server supports ('' if it offered none)."""
    wanted = [p.strip() for p in offered.split(",") if p.strip()] or [""]
    for proto in wanted:
        if proto == "" or proto in supported:
            return proto
    return None


class Closed(Exception):
    """The peer closed the WebSocket or the TCP connection."""


class ChannelSocket:
    """One upgraded connection: channel frames out, client frames (stdin, resize, close) in."""

    def __init__(self, sock: socket.socket, protocol: str) -> None:
        # The client sends nothing before it has read the 101 answer, so no frame can be sitting in the
        # HTTP handler's read buffer: frames are read from the socket itself.
        self.sock = sock
        self._buf = bytearray()
        self.protocol = protocol
        self.binary = not protocol.startswith(("base64.", "v4.base64."))
        self._send_lock = threading.Lock()
        self.closed = False

    @property
    def v4_status(self) -> bool:
        return self.protocol.startswith(("v4.", "v5."))

    # -- sending --

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack("!H", n)
        else:
            head += bytes([127]) + struct.pack("!Q", n)
        return head + payload

    def _send(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            if self.closed:
                raise Closed()
            try:
                self.sock.sendall(self._frame(opcode, payload))
            except OSError as exc:
                self.closed = True
                raise Closed() from exc

    def send_channel(self, channel: int, data: bytes) -> None:
        if self.binary:
            self._send(OP_BINARY, bytes([channel]) + data)
        else:
            self._send(OP_TEXT, str(channel).encode() + base64.b64encode(data))

    def send_status(self, status: dict[str, Any]) -> None:
        """The end of the command on the error channel (v4/v5 JSON; plain message before v4)."""
        if self.v4_status:
            self.send_channel(ERROR, json.dumps(status, separators=(",", ":")).encode())
        elif status.get("status") != "Success":
            self.send_channel(ERROR, str(status.get("message", "")).encode())

    def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        with contextlib.suppress(Closed):
            self._send(OP_CLOSE, struct.pack("!H", code))
        self.closed = True

    # -- receiving --

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except OSError as exc:
                raise Closed() from exc
            if not chunk:
                raise Closed()
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def readable(self, timeout: float) -> bool:
        """Whether a frame (or EOF) can be read without blocking for more than ``timeout``."""
        if self._buf:
            return True
        pending = getattr(self.sock, "pending", None)  # TLS: decrypted bytes select() cannot see
        if pending is not None and pending() > 0:
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready)

    def recv(self) -> tuple[int, bytes]:
        """One client message: (channel, data) for data frames, (CLOSE_SIGNAL, [channel]) for a v5 close."""
        message = b""
        opcode_first = None
        while True:
            b1, b2 = self._read_exact(2)
            fin, opcode = b1 & 0x80, b1 & 0x0F
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            mask = self._read_exact(4) if b2 & 0x80 else b""
            payload = self._read_exact(n) if n else b""
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == OP_CLOSE:
                self.close()
                raise Closed()
            if opcode == OP_PING:
                self._send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode_first is None:
                opcode_first = opcode
            message += payload
            if fin:
                break
        if not message:
            return -1, b""
        if self.binary or opcode_first == OP_BINARY:
            return message[0], message[1:]
        return int(chr(message[0])), base64.b64decode(message[1:])
