"""An asyncio MLLP client: send a message, wait for its acknowledgement, with timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import deque

from engine.errors import CrosswalkError
from engine.mllp.framing import Frame, FrameDecoder, OversizeFrame, encode_frame

_RESET = struct.pack("ii", 1, 0)


class MLLPError(CrosswalkError, ConnectionError):
    """The peer could not be reached, closed the connection, or did not answer in time."""


class MLLPClient:
    """One MLLP connection. Use ``async with MLLPClient(host, port) as client``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 10.0,
        ack_timeout: float = 30.0,
        max_message_size: int = 16 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        """Speak TLS from the first byte with this context (None: plain TCP)."""
        self.server_name = server_name
        """The name the server's certificate must carry (default: ``host``)."""
        self.port = port
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self._decoder = FrameDecoder(max_message_size)
        self._frames: deque[bytes] = deque()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=(self.server_name or self.host) if self.tls else None,
                    ssl_handshake_timeout=self.connect_timeout if self.tls else None,
                )
        except TimeoutError:
            raise MLLPError(
                f"no connection to {self.address} within {self.connect_timeout:g}s"
            ) from None
        except ssl.SSLCertVerificationError as error:
            raise MLLPError(
                f"TLS with {self.address} refused: its certificate is not accepted"
                f" ({error.verify_message})"
            ) from None
        except ssl.SSLError as error:
            raise MLLPError(f"TLS with {self.address} failed: {error.reason or error}") from None
        except OSError as error:
            raise MLLPError(
                f"cannot connect to {self.address}: {error.strerror or error}"
            ) from None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    def abort(self) -> None:
        """Drop the connection at once with a reset: the part of a message not yet taken is
        discarded, so a receiver that stopped reading and resumes finds a cut frame and a reset,
        not a whole stale copy it would process after the one sent again on a new connection."""
        if self._writer is not None:
            sock = self._writer.get_extra_info("socket")
            if sock is not None:  # linger 0: the kernel drops its unsent bytes and sends RST
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self._writer.transport.abort()
            self._writer = None

    async def __aenter__(self) -> MLLPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def write(self, payload: bytes) -> None:
        """Send one framed message without waiting for an answer."""
        if self._writer is None:
            raise MLLPError("not connected")
        try:
            self._writer.write(encode_frame(payload))
            async with asyncio.timeout(self.ack_timeout):
                await self._writer.drain()
        except TimeoutError:
            raise MLLPError(
                f"{self.address} did not take the message within {self.ack_timeout:g}s"
            ) from None
        except OSError as error:
            raise MLLPError(f"connection to {self.address} lost: {error}") from None

    async def read(self, timeout: float | None = None) -> bytes:
        """The next frame the peer sends (an ACK), waiting at most ``timeout`` seconds."""
        if self._reader is None:
            raise MLLPError("not connected")
        limit = self.ack_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                while not self._frames:
                    data = await self._reader.read(65536)
                    if not data:
                        raise MLLPError(f"{self.address} closed the connection without an answer")
                    for event in self._decoder.feed(data):
                        if isinstance(event, Frame):
                            self._frames.append(event.payload)
                        elif isinstance(event, OversizeFrame):
                            self._frames.append(event.head)
        except TimeoutError:
            raise MLLPError(f"no answer from {self.address} within {limit:g}s") from None
        except OSError as error:
            raise MLLPError(f"connection to {self.address} lost: {error}") from None
        return self._frames.popleft()

    async def send(self, payload: bytes) -> bytes:
        """Send one message and return the first frame answered (its ACK)."""
        await self.write(payload)
        return await self.read()
