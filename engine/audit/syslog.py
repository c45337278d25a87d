"""Sending audit events to a syslog collector as they are recorded: RFC 5424 messages,
octet-counted (RFC 6587 over TCP, RFC 5425 over TLS), the way IHE ATNA audit record
repositories receive them.

One message per event::

    <85>1 2026-12-04T10:11:12.123456Z pacs-gw crosswalk 4711 review.approve - \ufeff{"id": 42, …}

PRI is the facility (default 10, authpriv) times 8 plus the severity: 5 (notice) for an event
whose outcome is ok, 4 (warning) refused, 3 (error) error. MSGID is the action; the MSG is the
event as JSON (UTF-8, after a byte-order mark as RFC 5424 asks), the same fields as
``crosswalk audit list --format json``, its ``hash`` included: the collector holds a copy of the
chain that the database's owner cannot rewrite.

Best effort: each event gets one connection attempt bounded by ``timeout``. A collector that
cannot be reached is logged once (WARNING), counted, and not tried again for
:data:`RETRY_AFTER` seconds; the event stays in the store either way and the command goes on.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import ssl
import time
from dataclasses import dataclass, field

from engine.audit.settings import AuditSettings, SyslogSettings
from engine.audit.tables import Outcome
from engine.audit.trail import AuditRecord
from engine.mllp.tls import client_context

log = logging.getLogger(__name__)

VERSION = 1
SEVERITY = {Outcome.OK: 5, Outcome.REFUSED: 4, Outcome.ERROR: 3}
"""RFC 5424 severities: notice, warning, error."""
RETRY_AFTER = 30.0
"""Seconds a collector that could not be reached is left alone (events meanwhile are counted
as missed; they are in the store)."""
DRAIN_TIMEOUT = 0.5
"""After sending, how long to wait for the collector to close its side."""
BOM = "\ufeff"


def _token(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable ASCII without spaces, ``-`` when empty."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return cleaned or "-"


def message(record: AuditRecord, *, app_name: str, facility: int, procid: int) -> bytes:
    """The RFC 5424 message of one event (without framing)."""
    pri = facility * 8 + SEVERITY.get(record.outcome, 5)
    header = " ".join(
        (
            f"<{pri}>{VERSION}",
            record.as_dict()["recorded_at"],
            _token(record.host, 255),
            _token(app_name, 48),
            _token(str(procid), 128),
            _token(record.action, 32),
            "-",  # no structured data: the event is the MSG
        )
    )
    body = json.dumps(record.as_dict(), ensure_ascii=False, sort_keys=True)
    return f"{header} {BOM}{body}".encode()


def frame(payload: bytes) -> bytes:
    """Octet-counting framing: ``LENGTH SP MESSAGE`` (RFC 6587 3.4.1, RFC 5425 4.3)."""
    return f"{len(payload)} ".encode("ascii") + payload


@dataclass
class SyslogExport:
    """Sends each event to one collector, one short connection per event."""

    settings: SyslogSettings
    sent: int = 0
    failures: int = 0
    """Events that could not be sent (attempted and failed, or skipped while waiting)."""
    _retry_at: float = 0.0
    _warned: bool = False
    _context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def send(self, record: AuditRecord) -> bool:
        """Send one event; False (logged once, counted) when the collector cannot take it."""
        now = time.monotonic()
        if now < self._retry_at:
            self.failures += 1
            return False
        settings = self.settings
        data = frame(
            message(
                record, app_name=settings.app_name, facility=settings.facility, procid=os.getpid()
            )
        )
        try:
            self._deliver(data)
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            self.failures += 1
            self._retry_at = time.monotonic() + RETRY_AFTER
            if not self._warned:
                self._warned = True
                log.warning(
                    "audit: the syslog collector %s cannot be reached (%s); events stay in the"
                    " store and export is tried again in %gs",
                    self.target,
                    _reason(error),
                    RETRY_AFTER,
                )
            return False
        if self._warned:
            self._warned = False
            log.info(
                "audit: the syslog collector %s is reached again (%d event(s) not sent)",
                self.target,
                self.failures,
            )
        self.sent += 1
        return True

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            options = self.settings.tls
            if options is None:
                self._context = ssl.create_default_context()
                self._context.minimum_version = ssl.TLSVersion.TLSv1_2
            else:
                self._context = client_context(options)
        return self._context

    def _deliver(self, data: bytes) -> None:
        settings = self.settings
        timeout = float(settings.timeout)
        raw = socket.create_connection((settings.host, settings.port), timeout=timeout)
        connection: socket.socket = raw
        try:
            if settings.protocol == "tls":
                name = settings.tls.server_name if settings.tls is not None else None
                connection = self._tls().wrap_socket(raw, server_hostname=name or settings.host)
            connection.sendall(data)
            _finish(connection)
        finally:
            connection.close()


def _finish(connection: socket.socket) -> None:
    """Close our side and read until the collector closes its side (briefly), so that nothing
    it sent (TLS session tickets) is left unread: closing with unread data would reset the
    connection, and the collector could lose the event."""
    connection.shutdown(socket.SHUT_WR)  # on TLS: the plain socket, the TLS session dropped
    deadline = time.monotonic() + DRAIN_TIMEOUT
    connection.setblocking(False)
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([connection], [], [], left)
        if not readable:
            return
        try:
            if not connection.recv(4096):
                return
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"its certificate is not accepted: {error.verify_message}"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def exporter(settings: AuditSettings) -> SyslogExport | None:
    """The export the ``audit:`` section asks for, or None."""
    return SyslogExport(settings.syslog) if settings.syslog is not None else None
