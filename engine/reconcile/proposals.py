"""Writing merge proposals idempotently, and reading them back for export."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, insert, select, update

from engine.mpi.queries import medical_record_numbers
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of
from engine.studies.tables import Study, study_column

_proposals = table_of(Proposal)
_studies = table_of(Study)


@dataclass(frozen=True, slots=True)
class Scored:
    """A candidate worth proposing, as the run scored it."""

    study_uid: str
    patient_id: int
    probability: float
    match_weight: float
    band: str
    rank: int
    evidence: str


@dataclass(slots=True)
class WriteCounts:
    new: int = 0
    refreshed: int = 0
    withdrawn: int = 0
    closed: int = 0
    bands: dict[str, int] = field(default_factory=dict)


def decided(connection: Connection) -> tuple[set[str], set[tuple[str, int]]]:
    """Studies with an approved proposal, and (study, patient) pairs a reviewer rejected."""
    approved: set[str] = set()
    rejected: set[tuple[str, int]] = set()
    query = select(_proposals.c.study_uid, _proposals.c.patient_id, _proposals.c.status).where(
        _proposals.c.status.in_([ProposalStatus.APPROVED, ProposalStatus.REJECTED])
    )
    for uid, patient_id, status in connection.execute(query):
        if status == ProposalStatus.APPROVED:
            approved.add(uid)
        else:
            rejected.add((uid, patient_id))
    return approved, rejected


def write(
    connection: Connection,
    run_id: int,
    scored: list[Scored],
    scored_studies: set[str],
    orphans: set[str],
) -> WriteCounts:
    """Insert new proposals, refresh open ones, withdraw open ones of scored studies that are
    no longer candidates, and close open ones of studies that are no longer orphans. Decided
    proposals (approved, rejected) are never changed."""
    now = datetime.now(UTC)
    counts = WriteCounts()
    existing: dict[tuple[str, int], tuple[int, str]] = {}
    for chunk in chunks(sorted(scored_studies)):
        query = select(
            _proposals.c.id, _proposals.c.study_uid, _proposals.c.patient_id, _proposals.c.status
        ).where(in_values(_proposals.c.study_uid, chunk))
        for pid, uid, patient_id, status in connection.execute(query):
            existing[(uid, patient_id)] = (pid, status)
    new_rows: list[dict[str, Any]] = []
    refreshed: list[dict[str, Any]] = []
    kept: set[tuple[str, int]] = set()
    for item in scored:
        counts.bands[item.band] = counts.bands.get(item.band, 0) + 1
        values = {
            "probability": item.probability,
            "match_weight": item.match_weight,
            "band": item.band,
            "rank": item.rank,
            "evidence": item.evidence,
            "run_id": run_id,
            "updated_at": now,
        }
        pair = (item.study_uid, item.patient_id)
        kept.add(pair)
        found = existing.get(pair)
        if found is None:
            new_rows.append(
                {
                    **values,
                    "study_uid": item.study_uid,
                    "patient_id": item.patient_id,
                    "status": ProposalStatus.PENDING,
                    "created_at": now,
                }
            )
        else:
            status = found[1] if found[1] in ProposalStatus.OPEN else ProposalStatus.PENDING
            refreshed.append({**values, "proposal_id": found[0], "new_status": status})
    if new_rows:
        connection.execute(insert(_proposals), new_rows)
    if refreshed:
        statement = (
            update(_proposals)
            .where(_proposals.c.id == bindparam("proposal_id"))
            .values(
                probability=bindparam("probability"),
                match_weight=bindparam("match_weight"),
                band=bindparam("band"),
                rank=bindparam("rank"),
                evidence=bindparam("evidence"),
                run_id=bindparam("run_id"),
                updated_at=bindparam("updated_at"),
                status=bindparam("new_status"),
            )
        )
        connection.execute(statement, refreshed)
    stale = [
        pid
        for pair, (pid, status) in existing.items()
        if pair not in kept and status in ProposalStatus.OPEN
    ]
    counts.new, counts.refreshed = len(new_rows), len(refreshed)
    counts.withdrawn = _set_status(connection, stale, ProposalStatus.WITHDRAWN, now)
    still_open = select(_proposals.c.id, _proposals.c.study_uid).where(
        _proposals.c.status.in_(ProposalStatus.OPEN)
    )
    resolved = [pid for pid, uid in connection.execute(still_open) if uid not in orphans]
    counts.closed = _set_status(connection, resolved, ProposalStatus.CLOSED, now)
    return counts


def _set_status(connection: Connection, ids: list[int], status: str, now: datetime) -> int:
    for chunk in chunks(ids):
        connection.execute(
            update(_proposals)
            .where(in_values(_proposals.c.id, chunk))
            .values(status=status, updated_at=now)
        )
    return len(ids)


EXPORT_COLUMNS = (
    "proposal_id",
    "study_uid",
    "patient_id",
    "issuer",
    "mrn",
    "authority",
    "mpi_patient",
    "probability",
    "band",
    "rank",
    "status",
    "match_weight",
    "study_date",
    "modality",
    "accession",
    "evidence",
)
"""``patient_id``/``issuer``: the study's patient as the PACS recorded it; ``mrn``/
``authority``: the proposed MPI patient's medical record number; ``mpi_patient``: its MPI id."""


def with_studies(*columns: Any) -> Select[Any]:
    """Proposals with their study's id, issuer, date, modality and accession (and ``columns``);
    a proposal whose study left the index comes with NULLs."""
    return select(
        _proposals,
        study_column("patient_id").label("study_patient"),
        _studies.c.issuer,
        _studies.c.study_date,
        _studies.c.modality,
        _studies.c.accession,
        *columns,
    ).select_from(_proposals.outerjoin(_studies, _studies.c.study_uid == _proposals.c.study_uid))


def export_rows(
    connection: Connection, statuses: list[str] | None = None, bands: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Proposals joined with their study and MRN, best first within each study."""
    query = with_studies().order_by(_proposals.c.study_uid, _proposals.c.rank)
    if statuses:
        query = query.where(_proposals.c.status.in_(statuses))
    if bands:
        query = query.where(_proposals.c.band.in_(bands))
    rows = connection.execute(query).all()
    mrns = medical_record_numbers(connection, [r.patient_id for r in rows])
    for row in rows:
        mrn, authority = mrns.get(row.patient_id, ("", ""))
        yield {
            "proposal_id": row.id,
            "study_uid": row.study_uid,
            "patient_id": row.study_patient or "",
            "issuer": row.issuer or "",
            "mrn": mrn,
            "authority": authority,
            "mpi_patient": row.patient_id,
            "probability": row.probability,
            "band": row.band,
            "rank": row.rank,
            "status": row.status,
            "match_weight": row.match_weight,
            "study_date": row.study_date or "",
            "modality": row.modality or "",
            "accession": row.accession or "",
            "evidence": row.evidence,
        }
