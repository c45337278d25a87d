"""Helpers for testing against Crosswalk: a blocking MLLP peer, free ports, waiting for a port.

Used by Crosswalk's own tests and benches; useful to anyone testing an integration with it.
"""

from __future__ import annotations

import socket
import subprocess
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

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
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
