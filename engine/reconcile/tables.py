"""The reconciler's tables: blocking keys of MPI patients, runs, and merge proposals."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.crypto import EncryptedText, LookupText
from engine.store.schema import Base, Id, UTCDateTime


class PatientKey(Base):
    """A blocking key of a live MPI patient (phonetic family name + birth year, …)."""

    __tablename__ = "patient_keys"

    # Stored by patient: a first run appends a million patients' keys in id order, then builds
    # the index by key in one go (about half the time of inserting them in key order).
    patient_id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(LookupText("blocking key", 64), primary_key=True)
    """The key; its keyed hash in an encrypted store (blocking keys are made of names and
    dates)."""

    __table_args__ = (
        Index("ix_patient_keys_key", "key", "patient_id"),
        {"sqlite_with_rowid": False},
    )


class ReconcileRun(Base):
    """One ``reconcile run``: what it scored, the parameters it estimated, how far keys got."""

    __tablename__ = "reconcile_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(12), default="running")
    """running, finished or failed."""
    since: Mapped[str] = mapped_column(String(8), default="")
    orphans: Mapped[int] = mapped_column(Integer, default=0)
    pairs: Mapped[int] = mapped_column(Integer, default=0)
    proposals: Mapped[int] = mapped_column(Integer, default=0)
    keys_watermark: Mapped[int | None] = mapped_column(Id)
    """The newest MPI change (patient_events.id) the blocking keys reflect."""
    parameters: Mapped[str] = mapped_column(Text, default="")
    """The model's estimated parameters (JSON): m and u per comparison level, the prior."""


class ProposalStatus:
    """Values of ``proposals.status``."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    WITHDRAWN = "withdrawn"
    """No longer a candidate after the data changed (a later run may propose it again)."""
    CLOSED = "closed"
    """The study is no longer an orphan (the feed resolved it)."""

    ALL = (PENDING, DEFERRED, APPROVED, REJECTED, WITHDRAWN, CLOSED)
    OPEN = (PENDING, DEFERRED)
    """What a run may refresh, withdraw or close; decided proposals are never touched."""


class Proposal(Base):
    """A proposed merge: this orphaned study belongs to that MPI patient, with the evidence."""

    __tablename__ = "proposals"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[int] = mapped_column(Id, ForeignKey("patients.id"))
    probability: Mapped[float] = mapped_column(Float)
    match_weight: Mapped[float] = mapped_column(Float)
    """log2 of the Bayes factor of all the evidence (the sum of the field weights)."""
    band: Mapped[str] = mapped_column(String(10))
    rank: Mapped[int] = mapped_column(Integer)
    """1 for the study's best candidate."""
    status: Mapped[str] = mapped_column(String(12), default=ProposalStatus.PENDING)
    evidence: Mapped[str] = mapped_column(EncryptedText("evidence"), default="[]")
    """Per field: the comparison level, its weight, the values compared (JSON); encrypted with
    content encryption on (the values are patients' names and dates)."""
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("reconcile_runs.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("study_uid", "patient_id"),
        Index("ix_proposals_patient_id", "patient_id"),
        Index("ix_proposals_status_probability", "status", "probability"),
        # The review worklist filtered by band, most probable first (the console's filter).
        Index("ix_proposals_status_band_probability", "status", "band", "probability"),
        # One orphan, one patient: a second approval of the same study cannot be stored.
        Index(
            "uq_proposals_approved_study",
            "study_uid",
            unique=True,
            sqlite_where=text("status = 'approved'"),
            postgresql_where=text("status = 'approved'"),
        ),
    )
