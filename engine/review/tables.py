"""The review's audit trail: every decision on a proposal, by whom, when, why, on what."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.crypto import EncryptedText
from engine.store.schema import Base, Id, UTCDateTime


class Action:
    """Values of ``review_decisions.action``."""

    APPROVED = "approved"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    CLOSED = "closed"
    """The engine closed the proposal: its study was resolved (by the feed, or another approval)."""
    FOLLOWED_MERGE = "followed_merge"
    """The engine moved the proposal to the patient its candidate was merged into."""

    HUMAN = (APPROVED, REJECTED, DEFERRED)


class ReviewDecision(Base):
    """One decision on a proposal, with a snapshot of what the reviewer saw."""

    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    proposal_id: Mapped[int] = mapped_column(Id, ForeignKey("proposals.id"))
    study_uid: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[int] = mapped_column(Id)
    """The MPI patient the decision was about (after following merges)."""
    action: Mapped[str] = mapped_column(String(16))
    previous_status: Mapped[str] = mapped_column(String(12))
    reviewer: Mapped[str] = mapped_column(String(100))
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    """Decided by the engine (an automatic band, a merge followed, a study resolved)."""
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text, default="")
    snapshot: Mapped[str] = mapped_column(EncryptedText("snapshot"), default="{}")
    """The proposal, the study and the patient (with its MRN) as they were (JSON); encrypted
    with content encryption on."""
    message_id: Mapped[int | None] = mapped_column(Id, ForeignKey("messages.id"))
    """The merge message an approval sent."""

    __table_args__ = (
        Index("ix_review_decisions_proposal_id", "proposal_id"),
        Index("ix_review_decisions_decided_at", "decided_at"),
        Index("ix_review_decisions_message_id", "message_id"),
    )
