"""Intake: every framed message a listener receives is checked, stored, then acknowledged.

The order is the engine's promise: nothing is acknowledged AA/CA before it is committed, and
everything that arrives in a frame is committed, rejected messages included, so nothing a sender
sent is dropped without a record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from engine.hl7v2.ack import POSITIVE_CODES, Outcome, ack_codes, build_ack
from engine.hl7v2.check import Examination, examine
from engine.hl7v2.errors import ErrorCode, Location, Problem
from engine.logs import Throttled
from engine.mllp.listener import Reply
from engine.pipeline.settings import ListenerSettings
from engine.store.operations import NewMessage, Settled, StoredMessage, duplicate_reason
from engine.store.received import AcceptedMessage, message_row
from engine.store.schema import MessageStatus
from engine.store.writer import FAILURE_LOG_INTERVAL, StoreWriter

log = logging.getLogger(__name__)

DUPLICATE_TEXT = "duplicate of a message already accepted; not processed again"
NOT_STORED_TEXT = "the message could not be stored; it was not accepted, send it again later"
_QUIET_STATUSES = (MessageStatus.RECEIVED, MessageStatus.FILTERED)
"""Normal fates, logged at DEBUG only: a message a second at INFO would drown the log (a
listener that no route reads is reported once, when the configuration is loaded)."""


class Intake:
    """Turns received frames of one listener into stored messages and their ACK payloads."""

    def __init__(
        self,
        writer: StoreWriter,
        listener: ListenerSettings,
        accepted: Callable[[AcceptedMessage], None] | None = None,
        has_routes: Callable[[str], bool] = lambda listener: True,
        unsure: Callable[[], None] = lambda: None,
        observe: Callable[[str, str, str, int, float], None] | None = None,
    ) -> None:
        self.writer = writer
        self._not_stored = Throttled(log, FAILURE_LOG_INTERVAL, logging.ERROR)
        """While the store is down every message fails: one line per kind of error, then one
        every ten seconds with the count of the others (each one's control id at DEBUG)."""
        self.observe = observe
        """Told of every message answered: listener, status, ACK code(s), size, seconds."""
        self.accepted = accepted
        """Told of every message stored as received (the dispatcher routes it)."""
        self.unsure = unsure
        """Told when a commit failed: the database may have kept the message all the same."""
        self.has_routes = has_routes
        """Whether any route takes a listener's messages (asked per message: hot reload)."""
        self.listener = listener

    @property
    def listener(self) -> ListenerSettings:
        return self._listener

    @listener.setter
    def listener(self, settings: ListenerSettings) -> None:
        """New settings apply from the next message (hot reload)."""
        self._listener = settings
        self._window = timedelta(seconds=float(settings.duplicate_window))

    def on_frame(self, payload: bytes, peer: str, reply: Reply) -> None:
        """Store one complete message; ``reply`` gets the ACK payloads once it is committed."""
        examination = examine(
            payload,
            default_charset=self.listener.charset,
            strict_segments=self.listener.strict_segments,
        )
        self._submit(payload, len(payload), examination, examination.problem, peer, reply)

    def on_oversize(self, head: bytes, size: int, peer: str, reply: Reply) -> None:
        """Record a message over the size limit (its first bytes) and refuse it."""
        examination = examine(head, default_charset=self.listener.charset)
        limit = int(self.listener.max_message_size)
        problem = Problem(
            ErrorCode.INTERNAL_ERROR,
            f"message of {size} bytes exceeds this listener's limit of {limit} bytes",
            Location("MSH"),
            reject=True,
        )
        self._submit(head, size, examination, problem, peer, reply)

    def _submit(
        self,
        raw: bytes,
        size: int,
        examination: Examination,
        problem: Problem | None,
        peer: str,
        reply: Reply,
    ) -> None:
        header = examination.header
        now = datetime.now(UTC)
        started = time.monotonic()
        row = message_row(raw, size, examination, now, self.listener.name, peer)
        codec = examination.header_codec
        control_id = header.control_id if header else ""

        def settle(copy_id: int | None) -> Settled:
            if problem is not None:
                outcome = Outcome.REJECTED if problem.reject else Outcome.ERROR
                status, reason, text = MessageStatus.REJECTED, str(problem), problem.text
            elif copy_id is not None:
                outcome, status = Outcome.ACCEPTED, MessageStatus.DUPLICATE
                reason = duplicate_reason(copy_id)
                text = DUPLICATE_TEXT
            elif routed:
                outcome, status, reason, text = Outcome.ACCEPTED, MessageStatus.RECEIVED, "", ""
            else:
                # No route takes this listener's messages: the fate is known now, and writing
                # it with the message spares a second write of the row.
                outcome, status, text = Outcome.ACCEPTED, MessageStatus.FILTERED, ""
                reason = f"no route takes messages from {self.listener.name}"
            codes = ack_codes(header, outcome)
            acks = tuple(
                build_ack(
                    header,
                    code,
                    "" if code == "AA" and copy_id is None else text,
                    None if code in POSITIVE_CODES else problem,
                ).encode(codec, "replace")
                for code in codes
            )
            return Settled(status, reason, " ".join(codes), acks)

        def done(result: StoredMessage | BaseException) -> None:
            if isinstance(result, BaseException):
                name, error = self.listener.name, type(result).__name__
                if not self._not_stored.log(
                    error,
                    "message NOT stored, answering an error: listener=%s control_id=%s error=%s",
                    name,
                    control_id,
                    error,
                ):
                    log.debug("message NOT stored: listener=%s control_id=%s", name, control_id)
                self.unsure()
                failure = Problem(ErrorCode.INTERNAL_ERROR, NOT_STORED_TEXT)
                codes = ack_codes(header, Outcome.ERROR)
                reply(
                    [
                        build_ack(header, code, NOT_STORED_TEXT, failure).encode(codec, "replace")
                        for code in codes
                    ]
                )
                if self.observe is not None:
                    elapsed = time.monotonic() - started
                    self.observe(self.listener.name, "not stored", " ".join(codes), size, elapsed)
                return
            self._log(result, control_id)
            reply(list(result.settled.acks), result.settled.status == MessageStatus.REJECTED)
            if self.observe is not None:
                settled = result.settled
                elapsed = time.monotonic() - started
                self.observe(self.listener.name, settled.status, settled.ack_code, size, elapsed)
            if self.accepted is not None and result.settled.status == MessageStatus.RECEIVED:
                self.accepted(AcceptedMessage(result.id, raw, row["charset"], row["listener"]))

        routed = self.has_routes(self.listener.name)
        since = now - self._window if problem is None and self._window else None
        self.writer.submit(NewMessage(row, settle, done, since))

    def _log(self, stored: StoredMessage, control_id: str) -> None:
        settled = stored.settled
        if settled.status in _QUIET_STATUSES:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "stored message %d control_id=%s as %s", stored.id, control_id, settled.status
                )
        elif settled.status == MessageStatus.DUPLICATE:
            log.info(
                "duplicate message %d control_id=%s (first stored as %d)",
                stored.id,
                control_id,
                stored.duplicate_of,
            )
        else:
            log.warning(
                "rejected message %d control_id=%s answered %s: %s",
                stored.id,
                control_id,
                settled.ack_code or "nothing",
                settled.reason,
            )
