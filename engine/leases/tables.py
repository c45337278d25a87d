"""The ``leases`` table: one row per piece of work engines take turns to own."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.schema import Base, UTCDateTime


class Lease(Base):
    """Who owns a piece of work (``queue:pacs#0``, ``mpi``, ``routing``), until when, and the
    epoch: raised at every takeover, so a write fenced with an older epoch is refused.

    Rows named ``engine:<holder>`` say which engines are alive (their fair share of the work).
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """On the database's clock: every engine judges expiry by the same clock."""
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    info: Mapped[str | None] = mapped_column(Text)
    """``engine:`` rows: the engine's own summary (JSON: listeners, admin endpoint), written
    as it renews, for ``crosswalk status``."""
