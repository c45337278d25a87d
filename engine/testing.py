"""Helpers for testing against Crosswalk: a blocking MLLP peer, free ports, waiting for a port.

Used by Crosswalk's own tests and benches; useful to anyone testing an integration with it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import subprocess
import threading
import time
from typing import Any

from engine.mllp.framing import Frame, FrameDecoder, OversizeFrame, encode_frame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"engine exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


class Peer:
    """A blocking MLLP connection for tests: send bytes, read frames, with timeouts."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        *,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        plain = socket.create_connection((host, port), timeout=timeout)
        self.sock: socket.socket = (
            tls.wrap_socket(plain, server_hostname=server_name or host) if tls else plain
        )
        self.decoder = FrameDecoder(1 << 26)
        self.frames: list[bytes] = []
        self.timeout = timeout

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(encode_frame(payload))

    def read(self, timeout: float | None = None) -> bytes:
        """The next frame; raises TimeoutError if none comes in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame received")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no frame received") from None
            if not data:
                raise ConnectionError("closed by the engine")
            for event in self.decoder.feed(data):
                if isinstance(event, Frame):
                    self.frames.append(event.payload)
                elif isinstance(event, OversizeFrame):
                    self.frames.append(event.head)
        return self.frames.pop(0)

    def exchange(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.read()

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the engine closes the connection within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeReceiver:
    """An MLLP receiver on loopback (a stand-in PACS) whose behaviour a test controls.

    ``mode`` is one of: ``ack`` (answer AA), ``ae`` / ``ar`` (answer AE / AR), ``stall`` (read
    the message, never answer), ``close`` (close the connection before answering),
    ``wrong_id`` (answer AA with an MSA-2 that is not the message's MSH-10), ``empty_id`` (AA
    with MSA-2 empty), ``garbage`` (answer a frame that is not HL7), ``reset`` (send half the
    ACK, then reset the connection), ``no_read`` (accept connections and never read them, so
    the sender's TCP window fills). Every message received is kept in ``received`` (decoded
    as UTF-8 with replacement), in order.
    ``stop()`` closes the port, so the next connection is refused.
    """

    def __init__(self, port: int = 0, mode: str = "ack", tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.tls = tls
        """Accept TLS connections with this (server) context."""
        self.reject: set[str] = set()
        """Control ids answered AR whatever the mode."""
        self.received: list[bytes] = []
        self.connections = 0
        self.tls_failures = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._open = True
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def texts(self) -> list[str]:
        with self._lock:
            return [m.decode("utf-8", "replace") for m in self.received]

    def control_ids(self) -> list[str]:
        ids = []
        for text in self.texts:
            msh = text.split("\r", 1)[0]
            fields = msh.split(msh[3])
            ids.append(fields[9] if len(fields) > 9 else "")
        return ids

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """True once ``count`` messages have arrived (within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        self._open = False
        self._server.close()
        for client in list(self._clients):
            with contextlib.suppress(OSError):
                client.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while self._open:
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.tls is not None:
            try:
                client.settimeout(5)
                client = self.tls.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):
                self.tls_failures += 1
                client.close()
                return
        self._clients.append(client)
        decoder = FrameDecoder(1 << 24)
        client.settimeout(0.2)
        while self.mode == "no_read" and self._open:
            time.sleep(0.05)
        with client:
            while self._open:
                try:
                    data = client.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for event in decoder.feed(data):
                    if not isinstance(event, Frame):
                        continue
                    mode = self.mode
                    if mode == "close":
                        return
                    with self._lock:
                        self.received.append(event.payload)
                    if mode == "stall":
                        continue
                    control_id = _control_id(event.payload)
                    code = {"ar": "AR", "ae": "AE"}.get(mode, "AA")
                    if control_id in self.reject:
                        code = "AR"
                    if mode == "wrong_id":
                        control_id = "NOT" + control_id
                    answered = "" if mode == "empty_id" else control_id
                    ack = (
                        "MSH|^~\\&|PACS|RAD|CW|HOSP|20261123||ACK|A" + control_id + "|P|2.5.1\r"
                        f"MSA|{code}|{answered}|{'' if code == 'AA' else 'refused by test'}\r"
                    ).encode()
                    if mode == "garbage":
                        ack = b"<html><body>500 Internal Server Error</body></html>"
                    try:
                        if mode == "reset":
                            frame = encode_frame(ack)
                            client.sendall(frame[: len(frame) // 2])
                            linger = struct.pack("ii", 1, 0)  # close with RST, not FIN
                            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                            return
                        client.sendall(encode_frame(ack))
                    except OSError:
                        return


def _control_id(payload: bytes) -> str:
    msh = payload.split(b"\r", 1)[0].decode("latin-1")
    fields = msh.split(msh[3]) if len(msh) > 3 else []
    return fields[9] if len(fields) > 9 else ""
