"""The database tables (SQLAlchemy 2 declarative models). Migrations live in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine.store.crypto import EncryptedBytes, EncryptedText

# SQLite only auto-increments an INTEGER PRIMARY KEY; BIGINT elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, typed as one (``Model.__table__`` is only a
    ``FromClause`` to a type checker), for statements written in Core."""
    return cast(Table, model.__table__)


class MessageStatus:
    """Values of ``messages.status``: the fate of each message."""

    RECEIVED = "received"
    """Accepted and stored; waiting to be routed."""
    ROUTED = "routed"
    """Routed: queued for (or delivered to) at least one destination."""
    FILTERED = "filtered"
    """No route sent it anywhere; ``status_reason`` says which condition of which route."""
    ERRORED = "errored"
    """A route failed on it (a step, a table, a template); ``status_reason`` says why."""
    DUPLICATE = "duplicate"
    """Same MSH-3/4/10 as an accepted message within the duplicate window; not processed."""
    REJECTED = "rejected"
    """Refused at intake (answered AE/AR); kept for the record, never processed."""

    ALL = (RECEIVED, ROUTED, FILTERED, ERRORED, DUPLICATE, REJECTED)
    ACCEPTED = (RECEIVED, ROUTED, FILTERED, ERRORED)
    """Every status of a message that was acknowledged positively and not as a duplicate."""


class DeliveryState:
    """Values of ``deliveries.state``."""

    QUEUED = "queued"
    """Waiting in its destination's queue (or being sent)."""
    DELIVERED = "delivered"
    """The destination answered AA or CA; its answer is in ``ack``."""
    ERRORED = "errored"
    """Set aside after the destination refused it (on_nak: set_aside); ``last_error`` says why."""

    ALL = (QUEUED, DELIVERED, ERRORED)


class Message(Base):
    """One received HL7 message, exactly as it arrived, and what the engine answered."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    listener: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str] = mapped_column(String(128))
    raw: Mapped[bytes] = mapped_column(EncryptedBytes("messages.raw"))
    size: Mapped[int] = mapped_column(Integer)
    """Bytes received; larger than ``len(raw)`` when an oversize message was cut."""
    charset: Mapped[str | None] = mapped_column(String(32))
    """The character set the message was read with (MSH-18, else the listener's default)."""
    # MSH-3/4/5/6 and MSH-10 are kept whole: they identify the message (duplicates, the
    # destination's ACK), and a cut value would make two different messages the same.
    sending_application: Mapped[str] = mapped_column(Text, default="")
    sending_facility: Mapped[str] = mapped_column(Text, default="")
    receiving_application: Mapped[str] = mapped_column(Text, default="")
    receiving_facility: Mapped[str] = mapped_column(Text, default="")
    message_datetime: Mapped[str] = mapped_column(String(32), default="")
    message_type: Mapped[str] = mapped_column(String(64), default="")
    message_code: Mapped[str] = mapped_column(String(8), default="")
    trigger_event: Mapped[str] = mapped_column(String(8), default="")
    control_id: Mapped[str] = mapped_column(Text, default="")
    dedup_key: Mapped[str] = mapped_column(String(32), default="")
    """A digest of MSH-3, MSH-4 and MSH-10, whole: the duplicate check looks messages up by it
    (an index on the values themselves would refuse long ones on PostgreSQL)."""
    processing_id: Mapped[str] = mapped_column(String(8), default="")
    version_id: Mapped[str] = mapped_column(String(16), default="")
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str] = mapped_column(EncryptedText("messages.status_reason"), default="")
    duplicate_of: Mapped[int | None] = mapped_column(Id, ForeignKey("messages.id"))
    ack_code: Mapped[str] = mapped_column(String(8), default="")
    """MSA-1 codes answered, e.g. ``AA`` or ``CA AA`` in enhanced mode; empty when none."""
    ack: Mapped[bytes] = mapped_column(EncryptedBytes("messages.ack"), default=b"")
    """The acknowledgement(s) written back, encoded, CR-separated."""

    __table_args__ = (
        Index(None, "received_at"),
        Index("ix_messages_dedup", "dedup_key", "received_at"),
        # A hash index on PostgreSQL: a B-tree refuses values over ~2.7 kB.
        Index("ix_messages_control_id", "control_id", postgresql_using="hash"),
        Index(None, "message_code", "trigger_event"),
        Index(None, "status", "id"),
        Index(None, "duplicate_of"),
    )


class Delivery(Base):
    """One message on its way to one destination: the durable, ordered queue."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(Id, ForeignKey("messages.id"))
    route: Mapped[str] = mapped_column(String(64))
    destination: Mapped[str] = mapped_column(String(64))
    partition: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[bytes] = mapped_column(EncryptedBytes("deliveries.payload"))
    """The message as sent: after the route's transforms, encoded in its character set."""
    control_id: Mapped[str] = mapped_column(Text, default="")
    """MSH-10 as sent, whole: the destination's ACK must echo it (MSA-2)."""
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(EncryptedText("deliveries.last_error"), default="")
    ack: Mapped[bytes | None] = mapped_column(EncryptedBytes("deliveries.ack"))
    """The destination's last answer."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When the worker tries this delivery again (set while the destination cannot be reached)."""

    __table_args__ = (
        Index("ix_deliveries_queue", "destination", "state", "partition", "id"),
        Index(None, "message_id"),
    )


class DestinationState(Base):
    """Operator controls of a destination's queue, shared by every engine process."""

    __tablename__ = "destination_state"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    generation: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped when the queue changed behind the engine's back (retry, resend): reload it."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RetentionProgress(Base):
    """Where pruning got to, per kind and status (``content:delivered``…): the id below which
    every message of that kind has been looked at, so a restart does not read them again."""

    __tablename__ = "retention_progress"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    after_id: Mapped[int] = mapped_column(Id)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
