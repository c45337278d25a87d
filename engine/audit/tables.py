"""The audit trail's table: one row per event, each carrying the hash of the row before it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.schema import Base, Id, UTCDateTime


class Outcome:
    """Values of ``audit_events.outcome``."""

    OK = "ok"
    REFUSED = "refused"
    """Not done: not found, not allowed, bad input, a decision the rules refuse."""
    ERROR = "error"
    """It failed part-way (or was interrupted); what was done before stays done."""

    ALL = (OK, REFUSED, ERROR)


class AuditEvent(Base):
    """One recorded action: who, from where, when, what (action, objects, criteria), outcome.

    Append-only: ``id`` counts 1, 2, 3… without gaps, and ``hash`` is the SHA-256 of the row's
    fields (``previous_hash`` included), so a changed, removed or inserted row breaks the chain.
    No PHI: objects are row ids, criteria name the filters (a free-text filter's value is not
    kept), the detail is counts and reasons in words.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    """Who: the ``--user`` given, else the operating-system user; the engine's own actions are
    ``crosswalk (engine)``."""
    os_user: Mapped[str] = mapped_column(String(100))
    """The operating-system account that ran it, whatever ``--user`` said."""
    host: Mapped[str] = mapped_column(String(255))
    terminal: Mapped[str] = mapped_column(String(100))
    remote_address: Mapped[str] = mapped_column(String(100))
    """The SSH client's address, when the command ran in an SSH session."""
    action: Mapped[str] = mapped_column(String(32))
    objects: Mapped[str] = mapped_column(Text)
    """JSON list of ``kind:id`` (``message:12``, ``proposal:42``, ``destination:pacs``)."""
    criteria: Mapped[str] = mapped_column(Text)
    """JSON object: the filters used, by name (free-text values recorded as ``(given)``)."""
    outcome: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str] = mapped_column(Text)
    previous_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_events_recorded_at", "recorded_at"),
        Index("ix_audit_events_action", "action"),
        Index("ix_audit_events_actor", "actor"),
    )
