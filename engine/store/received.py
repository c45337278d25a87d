"""A received message as the store keeps it: the row written at intake (its bytes, where it came
from, its header fields), and the :class:`AcceptedMessage` the router gets of it.

Both intake (messages from a listener) and the review (merge messages an approval creates) build
their rows here, so every message enters the store the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.hl7v2.check import Examination
from engine.store.operations import duplicate_key

__all__ = ["HEADER_COLUMNS", "AcceptedMessage", "message_row"]


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """A stored message waiting to be routed: what the router needs of it."""

    id: int
    raw: bytes
    charset: str | None
    listener: str


HEADER_COLUMNS = (
    "sending_application",
    "sending_facility",
    "receiving_application",
    "receiving_facility",
    "message_datetime",
    "message_type",
    "message_code",
    "trigger_event",
    "control_id",
    "processing_id",
    "version_id",
)


def message_row(
    raw: bytes, size: int, examination: Examination, now: datetime, listener: str, peer: str
) -> dict[str, Any]:
    """The ``messages`` columns known before the outcome: the bytes, where they came from, and
    the header fields (empty when the header cannot be read)."""
    header = examination.header
    row: dict[str, Any] = {
        "received_at": now,
        "listener": listener,
        "peer": peer,
        "raw": raw,
        "size": size,
        "charset": _text(examination.charset[:32]),
    }
    if header is None:
        return row | dict.fromkeys(HEADER_COLUMNS, "") | {"dedup_key": duplicate_key("", "", "")}
    # Identifying fields are stored whole; the others are short by definition and cut to their
    # columns (a sender's nonsense in MSH-9 must not fail the commit).
    row.update(
        sending_application=_text(header.sending_application),
        sending_facility=_text(header.sending_facility),
        receiving_application=_text(header.receiving_application),
        receiving_facility=_text(header.receiving_facility),
        message_datetime=_text(header.message_datetime[:32]),
        message_type=_text(header.message_type[:64]),
        message_code=_text(header.message_code[:8]),
        trigger_event=_text(header.trigger_event[:8]),
        control_id=_text(header.control_id),
        processing_id=_text(header.processing_id[:8]),
        version_id=_text(header.version[:16]),
    )
    row["dedup_key"] = duplicate_key(
        row["sending_application"], row["sending_facility"], row["control_id"]
    )
    return row


def _text(value: str) -> str:
    """A header value as a text column can hold it: a NUL (only in a message refused for it;
    PostgreSQL cannot store one) becomes U+FFFD. The raw bytes keep the original."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value
