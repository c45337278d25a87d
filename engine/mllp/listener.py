"""The asyncio MLLP server: connections, framing faults, timeouts, strictly ordered ACKs.

Each connection hands its messages to the :class:`FrameHandler` one at a time, in arrival
order, and writes the ACK (or the ACKs enhanced mode asks for) of one message before it hands
over the next. What a message means is up to the handler; this module only moves bytes.

The path is callbacks rather than coroutines: a task wake-up per message costs more than
everything the listener itself does, and the ACK path is the engine's hottest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import typing
from asyncio.sslproto import SSLProtocol
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from engine.logs import Throttled
from engine.mllp.capacity import PROCESS
from engine.mllp.framing import Event, Frame, FrameDecoder, Garbage, OversizeFrame, encode_frame
from engine.mllp.tls import ServerTLS, peer_names, subject_allowed

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL = 60.0
"""Seconds between two log lines about refused connections from one address."""
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_PENDING = 64
"""Decoded frames a connection may queue before it stops reading from the socket."""


class Reply(Protocol):
    """Called by a handler, exactly once per message, with the ACK payloads to write back;
    ``rejected`` when the message was refused (it counts against the connection's budget)."""

    def __call__(self, acks: list[bytes], rejected: bool = False) -> None: ...


class FrameHandler(Protocol):
    """What a listener calls for each message."""

    def on_frame(self, payload: bytes, peer: str, reply: Reply) -> None: ...

    def on_oversize(self, head: bytes, size: int, peer: str, reply: Reply) -> None: ...


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """The socket-level settings of a listener."""

    name: str
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_size: int = 1024 * 1024
    idle_timeout: float = 3600.0
    read_timeout: float = 30.0
    tls: ServerTLS | None = None
    """Speak TLS from the first byte (None: plain TCP)."""
    allow: tuple[IPNetwork, ...] = ()
    """Addresses that may connect (empty: any)."""
    max_connections: int = 64
    """Connections open at once; a connection beyond it is closed at once."""
    rejections_per_second: float = 20.0
    """Rejected messages a connection may have a second (a burst of as many) before its next
    message waits until the budget allows it (0: no limit)."""


@dataclass(slots=True)
class ListenerStats:
    """Counters of one listener since it started."""

    connections: int = 0
    open_connections: int = 0
    frames: int = 0
    oversize: int = 0
    garbage_bytes: int = 0
    truncated_frames: int = 0
    read_timeouts: int = 0
    idle_timeouts: int = 0
    unanswered: int = 0
    """Messages stored after their sender had gone (their ACK could not be written)."""
    tls_refused: int = 0
    """Connections whose TLS handshake failed, or whose certificate's subject is not allowed."""
    refused: int = 0
    """Connections closed at once: from an address not allowed, or over max_connections."""
    held_back: int = 0
    """Messages that waited because their connection was over its rejection budget."""
    evicted: int = 0
    """Connections that never completed a message, closed to give their slot to a newcomer."""


class MLLPListener:
    """Accepts MLLP connections on one address and feeds their frames to a handler."""

    def __init__(self, limits: ListenerLimits, handler: FrameHandler) -> None:
        self.limits = limits
        self.handler = handler
        self.stats = ListenerStats()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._refusals = Throttled(log, REFUSAL_LOG_INTERVAL)

    def refuse(self, address: str) -> str | None:
        """Why a connection from ``address`` is refused, or None: not in ``allow``, or the
        listener is at ``max_connections``."""
        limits = self.limits
        if limits.allow:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                return "its address cannot be read"
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if not any(ip in network for network in limits.allow):
                return "its address is not in this listener's allow list"
        if len(self._connections) >= limits.max_connections and not self._make_room(
            f"at max_connections ({limits.max_connections})"
        ):
            return f"the listener is at max_connections ({limits.max_connections})"
        if PROCESS.full():
            at_limit = f"at the {PROCESS.limit} connections the open-file limit leaves room for"
            if not self._make_room(at_limit):
                return f"the engine is {at_limit}"
        return None

    def _make_room(self, why: str) -> bool:
        """At max_connections or the process's capacity (``why``): close the oldest
        connection that has not completed a message (idle or trickling), so that a sender that
        works gets a slot; a connection that has completed one keeps its slot. False when there
        is none to close.

        No grace period: a crowd reconnecting as fast as it is closed would keep every slot
        younger than any grace, and the sender that works out; a newcomer is the newest, so it
        is the last such connection to be closed, and completes its message long before."""
        now = asyncio.get_running_loop().time()
        idle = [c for c in self._connections if not c.messages]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.opened)
        self._connections.discard(victim)
        self.stats.evicted += 1
        self.log_once(  # once a minute per address, not per connection
            victim.peer.rsplit(":", 1)[0],
            now,
            "listener %s: %s: closed %s, open %.0fs without a message, for a new connection",
            self.limits.name,
            why,
            victim.peer,
            now - victim.opened,
        )
        if victim.transport is not None:
            victim.transport.abort()
        return True

    def _accept(self) -> asyncio.BaseProtocol:
        """The protocol of a new connection: MLLP, behind TLS when the listener has it (the
        settings of the moment: a reload's new certificate serves the next connection)."""
        connection = _Connection(self)
        tls = self.limits.tls
        return connection if tls is None else _TLSGate(self, connection, tls)

    def refuse_tls(self, peer: str, reason: str) -> None:
        log.warning("listener %s: TLS refused to %s: %s", self.limits.name, peer, reason)
        self.stats.tls_refused += 1  # after the log line: whoever sees the count finds the line

    def log_refusal(self, address: str, reason: str, now: float) -> None:
        self.stats.refused += 1
        self.log_once(
            address,
            now,
            "listener %s: connection from %s refused: %s",
            self.limits.name,
            address,
            reason,
        )

    def log_once(self, key: str, now: float, text: str, *args: object) -> None:
        """A warning logged once a minute per ``key``: a flood must not flood the log."""
        self._refusals.log(key, text, *args, now=now)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return self.limits.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def serving(self) -> bool:
        """Whether the listener is bound and accepting connections."""
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, self.limits.host, self.limits.port, reuse_address=True
        )
        log.info(
            "listener %s accepting MLLP on %s:%d", self.limits.name, self.limits.host, self.port
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, finish messages already received, then close every connection."""
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.finish()
        waiting = [c.drained for c in connections if not c.drained.done()]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=grace)
            if pending:
                log.warning(
                    "listener %s: %d connections still busy after %.0fs; closing them",
                    self.limits.name,
                    len(pending),
                    grace,
                )
                for connection in connections:
                    if connection.transport is not None:
                        connection.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("listener %s stopped", self.limits.name)


class _Connection(asyncio.Protocol):
    def __init__(self, listener: MLLPListener) -> None:
        self.listener = listener
        self.limits = listener.limits
        self.decoder = FrameDecoder(self.limits.max_message_size)
        self.events: deque[Event] = deque()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._loop = asyncio.get_running_loop()
        self.drained: asyncio.Future[None] = self._loop.create_future()
        """Done once the connection is closed and nothing it received is still in hand."""
        self._busy = False  # a message is with the handler, its ACK not yet written
        self._reading_paused = False
        self._writing_paused = False
        self._ending = False  # peer closed, connection lost, or listener stopping
        self._lost = False
        self._last_activity = self._loop.time()
        self._last_read = self._last_activity
        self.opened = self._last_activity
        self.messages = 0
        """Messages this connection completed (frames handed over)."""
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._allowance = self.limits.rejections_per_second  # rejections it may have now
        self._allowance_at = self._last_activity

    # -- asyncio.Protocol callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = typing.cast(asyncio.Transport, transport)
        address = transport.get_extra_info("peername")
        host = ""
        if isinstance(address, tuple):
            host = str(address[0])
            self.peer = f"{host}:{address[1]}"
        refusal = self.listener.refuse(host)
        if refusal is not None:
            self._refused = self._lost = self._ending = True
            self.drained.set_result(None)
            self.listener.log_refusal(host, refusal, self._loop.time())
            self.transport.abort()
            return
        stats = self.listener.stats
        stats.connections += 1
        stats.open_connections += 1
        PROCESS.open += 1
        self.listener._connections.add(self)
        log.info("listener %s: connection from %s", self.limits.name, self.peer)
        self._arm_timer()
        if self.limits.tls is not None:
            self._check_subject(self.limits.tls)

    def _check_subject(self, tls: ServerTLS) -> None:
        """After the handshake (this transport is the TLS one): the client's certificate must
        name an allowed subject."""
        assert self.transport is not None
        names = peer_names(self.transport.get_extra_info("peercert"))
        if not subject_allowed(names, tls.allowed_subjects):
            self._refuse_tls(
                "certificate subject not allowed"
                + (f" ({', '.join(names)})" if names else " (no certificate)")
            )
            self.transport.abort()
            return
        log.info(
            "listener %s: TLS with %s%s",
            self.limits.name,
            self.peer,
            f" ({names[0]})" if names else "",
        )

    def _refuse_tls(self, reason: str) -> None:
        self.listener.refuse_tls(self.peer, reason)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        events = self.decoder.feed(data)
        # Bytes outside any frame (a peer trickling garbage) do not keep a connection alive.
        if self.decoder.in_frame or any(not isinstance(e, Garbage) for e in events):
            self._last_activity = self._last_read
        if not events:
            return
        self.events.extend(events)
        if len(self.events) >= _MAX_PENDING and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._next()

    def eof_received(self) -> bool:
        # Keep the socket open for writing: ACKs for what was already received still go out.
        self._ending = True
        self._settle_if_idle()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._lost = True
        self._ending = True
        if self._timer is not None:
            self._timer.cancel()
        stats = self.listener.stats
        stats.open_connections -= 1
        PROCESS.open -= 1
        self.listener._connections.discard(self)
        if self.decoder.in_frame:
            log.warning(
                "listener %s: %s closed in the middle of a message (%d bytes discarded)",
                self.limits.name,
                self.peer,
                self.decoder.buffered,
            )
        log.info("listener %s: %s disconnected", self.limits.name, self.peer)
        self._next()
        self._settle_if_idle()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._next()

    # -- processing -----------------------------------------------------------------------------

    def finish(self) -> None:
        """Stop reading; handle what was already received, then close."""
        self._ending = True
        if self.transport is not None and not self._lost:
            self.transport.pause_reading()
        self._settle_if_idle()

    def _next(self) -> None:
        """Hand the next received message to the handler, if none is in hand."""
        while self.events and not self._busy and not (self._writing_paused and not self._lost):
            event = self.events.popleft()
            if self._reading_paused and len(self.events) < _MAX_PENDING // 2 and not self._ending:
                self._reading_paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
            if isinstance(event, Garbage):
                self._garbage(event)
                continue
            self._busy = True
            self.messages += 1
            stats = self.listener.stats
            stats.frames += 1
            try:
                if isinstance(event, Frame):
                    self.listener.handler.on_frame(event.payload, self.peer, self._reply)
                else:
                    assert isinstance(event, OversizeFrame)
                    stats.oversize += 1
                    self.listener.handler.on_oversize(
                        event.head, event.size, self.peer, self._reply
                    )
            except Exception:
                log.exception(
                    "listener %s: handler failed; closing %s", self.limits.name, self.peer
                )
                self._busy = False
                self.events.clear()
                if self.transport is not None:
                    self.transport.abort()
                break
        self._settle_if_idle()

    def _reply(self, acks: list[bytes], rejected: bool = False) -> None:
        if self._lost:
            self.listener.stats.unanswered += 1
            log.warning(
                "listener %s: %s left before its ACK could be sent (the message is stored)",
                self.limits.name,
                self.peer,
            )
        elif acks:
            transport = self.transport
            assert transport is not None
            transport.write(b"".join(encode_frame(ack) for ack in acks))
            self._last_activity = self._loop.time()
        wait = self._spend_rejection() if rejected else 0.0
        if wait > 0:  # still busy: the next message, and closing, wait for the budget
            self._loop.call_later(wait, self._release)
            return
        self._release()

    def _release(self) -> None:
        self._busy = False
        self._next()

    def _spend_rejection(self) -> float:
        """Count a rejection against the connection's budget (a token bucket refilled at
        ``rejections_per_second``); the seconds its next message must wait, 0 when within it."""
        rate = self.limits.rejections_per_second
        if rate <= 0:
            return 0.0
        now = self._loop.time()
        self._allowance = min(rate, self._allowance + (now - self._allowance_at) * rate) - 1
        self._allowance_at = now
        if self._allowance >= 0:
            return 0.0
        self.listener.stats.held_back += 1
        self.listener.log_once(
            f"budget {self.peer.rsplit(':', 1)[0]}",
            now,
            "listener %s: %s has more than %g messages a second rejected; its next messages"
            " wait their turn",
            self.limits.name,
            self.peer,
            rate,
        )
        return -self._allowance / rate

    def _settle_if_idle(self) -> None:
        if not self._ending or self._busy or self.events:
            return
        if not self._lost and self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self._lost and not self.drained.done():
            self.drained.set_result(None)

    def _garbage(self, event: Garbage) -> None:
        stats = self.listener.stats
        stats.garbage_bytes += event.size
        if event.truncated_frame:
            stats.truncated_frames += 1
            log.warning(
                "listener %s: %s started a new frame before ending the last one;"
                " %d bytes of the unfinished frame discarded",
                self.limits.name,
                self.peer,
                event.size,
            )
        else:
            log.warning(
                "listener %s: %d bytes outside any MLLP frame from %s skipped",
                self.limits.name,
                event.size,
                self.peer,
            )

    # -- timeouts -------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        timeouts = [t for t in (self.limits.read_timeout, self.limits.idle_timeout) if t > 0]
        interval = min(1.0, max(0.05, min(timeouts) / 4)) if timeouts else 1.0
        self._timer = self._loop.call_later(interval, self._check_timeouts)

    def _check_timeouts(self) -> None:
        if self._lost or self.transport is None:
            return
        now = self._loop.time()
        stats = self.listener.stats
        read_timeout, idle_timeout = self.limits.read_timeout, self.limits.idle_timeout
        if self.decoder.in_frame and read_timeout > 0 and now - self._last_read > read_timeout:
            stats.read_timeouts += 1
            log.warning(
                "listener %s: %s stalled for %.0fs in the middle of a message; dropped",
                self.limits.name,
                self.peer,
                read_timeout,
            )
            self.transport.abort()
            return
        idle = not self.decoder.in_frame and not self._busy and not self.events
        if idle and idle_timeout > 0 and now - self._last_activity > idle_timeout:
            stats.idle_timeouts += 1
            log.info(
                "listener %s: %s idle for %.0fs; closing", self.limits.name, self.peer, idle_timeout
            )
            self.finish()
            return
        self._arm_timer()


def _handshake_failure(error: BaseException) -> str:
    """Why a TLS handshake failed, in words for the log (no PHI can be in it)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, TimeoutError):
        return "no TLS handshake in time"
    return f"connection lost during the TLS handshake ({type(error).__name__})"


class _TLSGate(SSLProtocol):
    """asyncio's TLS protocol in front of one MLLP connection, so that the listener refuses a
    stranger before any TLS work, and sees (logs and counts) every handshake that fails: the
    event loop's own TLS server would drop them silently. The MLLP connection starts once the
    handshake is done, on the TLS transport."""

    def __init__(self, listener: MLLPListener, connection: _Connection, tls: ServerTLS) -> None:
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        super().__init__(
            loop,
            connection,
            tls.context,
            handshake,
            server_side=True,
            ssl_handshake_timeout=tls.handshake_timeout,  # type: ignore[arg-type]  # stub says int
        )
        self._listener = listener
        self._peer = "?"
        self._refused = False
        handshake.add_done_callback(self._handshake_done)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = transport.get_extra_info("peername")
        host = str(address[0]) if isinstance(address, tuple) else ""
        if isinstance(address, tuple):
            self._peer = f"{host}:{address[1]}"
        refusal = self._listener.refuse(host)
        if refusal is not None:
            self._refused = True
            self._listener.log_refusal(host, refusal, asyncio.get_running_loop().time())
            typing.cast(asyncio.Transport, transport).abort()
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._refused:
            super().connection_lost(exc)

    def _handshake_done(self, handshake: asyncio.Future[None]) -> None:
        if not handshake.cancelled() and handshake.exception() is not None:
            error = handshake.exception()
            assert error is not None
            self._listener.refuse_tls(self._peer, _handshake_failure(error))
