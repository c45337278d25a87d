"""Reading proposals for review: the filtered queue, one proposal with everything around it, the
delivery state of approved merges and the audit trail (the was-is list is ``was_is``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, false, select

from engine.mpi.tables import Patient
from engine.reconcile.proposals import medical_record_numbers, with_studies
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.review.merge_message import Person
from engine.review.tables import Action, ReviewDecision
from engine.store.fastsql import chunks, in_values
from engine.store.schema import Delivery, DeliveryState, Message, table_of
from engine.studies.tables import Study

_proposals = table_of(Proposal)
_studies = table_of(Study)
_patients = table_of(Patient)
_decisions = table_of(ReviewDecision)
_deliveries = table_of(Delivery)
_messages = table_of(Message)

PERSON_FIELDS = tuple(Person.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class StudySide:
    """The orphaned study as the PACS recorded it."""

    patient_id: str
    issuer: str
    person: Person
    study_date: str
    modality: str
    accession: str
    description: str
    source: str
    known: bool = True
    """False when the study is no longer in the study index."""


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """One proposal with its study, its candidate patient and, once approved, its merge."""

    proposal_id: int
    study_uid: str
    patient_id: int
    probability: float
    match_weight: float
    band: str
    rank: int
    status: str
    evidence: list[dict[str, Any]]
    study: StudySide
    patient: Person
    mrn: str
    authority: str
    updated_at: datetime
    delivery: str = ""
    """The merge message's delivery ('queued', 'delivered', 'errored: …'); '' when none."""


@dataclass(frozen=True, slots=True)
class ReviewFilter:
    """What ``review list`` (and batch approval) selects."""

    statuses: tuple[str, ...] = (ProposalStatus.PENDING,)
    bands: tuple[str, ...] = ()
    min_probability: float | None = None
    max_probability: float | None = None
    modalities: tuple[str, ...] = ()
    study_date_from: str = ""
    study_date_to: str = ""
    proposal_ids: tuple[int, ...] | None = None
    """Only these proposals (none when empty); None: any."""
    limit: int | None = None


def _query() -> Select[Any]:
    return (
        with_studies(
            _studies.c.description,
            _studies.c.source,
            _studies.c.id.label("study_row"),
            *(_studies.c[name].label(f"pacs_{name}") for name in PERSON_FIELDS),
            *(_patients.c[name].label(f"mpi_{name}") for name in PERSON_FIELDS),
        )
        .join(_patients, _patients.c.id == _proposals.c.patient_id)
        .order_by(_proposals.c.probability.desc(), _proposals.c.id)
    )


def _filtered(query: Select[Any], wanted: ReviewFilter) -> Select[Any]:
    p, s = _proposals.c, _studies.c
    if wanted.statuses:
        query = query.where(p.status.in_(wanted.statuses))
    if wanted.bands:
        query = query.where(p.band.in_(wanted.bands))
    if wanted.min_probability is not None:
        query = query.where(p.probability >= wanted.min_probability)
    if wanted.max_probability is not None:
        query = query.where(p.probability <= wanted.max_probability)
    if wanted.modalities:
        query = query.where(s.modality.in_([m.upper() for m in wanted.modalities]))
    if wanted.study_date_from:
        query = query.where(s.study_date >= wanted.study_date_from)
    if wanted.study_date_to:
        query = query.where(s.study_date <= wanted.study_date_to)
    if wanted.proposal_ids is not None:
        query = query.where(
            in_values(p.id, list(wanted.proposal_ids)) if wanted.proposal_ids else false()
        )
    if wanted.limit is not None:
        query = query.limit(wanted.limit)
    return query


def rows(connection: Connection, wanted: ReviewFilter, mrn_authority: str = "") -> list[ReviewRow]:
    """Proposals matching ``wanted``, most probable first."""
    found = connection.execute(_filtered(_query(), wanted)).all()
    mrns = medical_record_numbers(connection, [r.patient_id for r in found], mrn_authority)
    approved = [r.id for r in found if r.status == ProposalStatus.APPROVED]
    deliveries = merge_deliveries(connection, approved)
    return [_row(r, mrns, deliveries) for r in found]


def _row(row: Any, mrns: dict[int, tuple[str, str]], deliveries: dict[int, str]) -> ReviewRow:
    mrn, authority = mrns.get(row.patient_id, ("", ""))
    study = StudySide(
        row.study_patient or "",
        row.issuer or "",
        Person(*(getattr(row, f"pacs_{name}") or "" for name in PERSON_FIELDS)),
        row.study_date or "",
        row.modality or "",
        row.accession or "",
        row.description or "",
        row.source or "",
        row.study_row is not None,
    )
    return ReviewRow(
        row.id,
        row.study_uid,
        row.patient_id,
        row.probability,
        row.match_weight,
        row.band,
        row.rank,
        row.status,
        json.loads(row.evidence or "[]"),
        study,
        Person(*(getattr(row, f"mpi_{name}") or "" for name in PERSON_FIELDS)),
        mrn,
        authority,
        row.updated_at,
        deliveries.get(row.id, ""),
    )


def row(connection: Connection, proposal_id: int, mrn_authority: str = "") -> ReviewRow | None:
    """One proposal, whatever its status."""
    found = rows(connection, ReviewFilter(statuses=(), proposal_ids=(proposal_id,)), mrn_authority)
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    destination: str
    state: str
    attempts: int
    last_error: str
    control_id: str
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class DecisionView:
    id: int
    proposal_id: int
    study_uid: str
    patient_id: int
    action: str
    previous_status: str
    reviewer: str
    automatic: bool
    decided_at: datetime
    reason: str
    snapshot: dict[str, Any]
    message_id: int | None
    control_id: str = ""


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """What ``review show`` puts on the screen."""

    row: ReviewRow
    others: list[ReviewRow]
    """The study's other proposals."""
    decisions: list[DecisionView]
    deliveries: list[DeliveryView] = field(default_factory=list)


def item(connection: Connection, proposal_id: int, mrn_authority: str = "") -> ReviewItem | None:
    """One proposal with the study's other candidates, its decisions and its merge's delivery."""
    main = row(connection, proposal_id, mrn_authority)
    if main is None:
        return None
    siblings = select(_proposals.c.id).where(
        _proposals.c.study_uid == main.study_uid, _proposals.c.id != proposal_id
    )
    other_ids = tuple(connection.execute(siblings).scalars())
    others = rows(connection, ReviewFilter(statuses=(), proposal_ids=other_ids), mrn_authority)
    decisions = decision_views(connection, proposal_id=proposal_id)
    message_ids = [d.message_id for d in decisions if d.message_id is not None]
    return ReviewItem(main, others, decisions, deliveries_of_messages(connection, message_ids))


def deliveries_of_messages(connection: Connection, message_ids: list[int]) -> list[DeliveryView]:
    if not message_ids:
        return []
    query = (
        select(
            _deliveries.c.destination,
            _deliveries.c.state,
            _deliveries.c.attempts,
            _deliveries.c.last_error,
            _deliveries.c.control_id,
            _deliveries.c.updated_at,
        )
        .where(in_values(_deliveries.c.message_id, message_ids))
        .order_by(_deliveries.c.id)
    )
    return [DeliveryView(*r) for r in connection.execute(query)]


def merge_deliveries(connection: Connection, proposal_ids: list[int]) -> dict[int, str]:
    """Per approved proposal, the state of its merge message's deliveries, in a few words."""
    states: dict[int, list[tuple[str, str, int, str]]] = {}
    for chunk in chunks(sorted(set(proposal_ids))):
        query = (
            select(
                _decisions.c.proposal_id,
                _deliveries.c.destination,
                _deliveries.c.state,
                _deliveries.c.attempts,
                _deliveries.c.last_error,
            )
            .select_from(
                _decisions.join(_deliveries, _deliveries.c.message_id == _decisions.c.message_id)
            )
            .where(
                in_values(_decisions.c.proposal_id, chunk),
                _decisions.c.action == Action.APPROVED,
            )
            .order_by(_deliveries.c.id)
        )
        for proposal_id, destination, state, attempts, error in connection.execute(query):
            states.setdefault(proposal_id, []).append((destination, state, attempts, error))
    summary = {pid: "not sent (no route)" for pid in proposal_ids}
    for proposal_id, found in states.items():
        summary[proposal_id] = "; ".join(_delivery_words(*one) for one in found)
    return summary


def _delivery_words(destination: str, state: str, attempts: int, error: str) -> str:
    if state == DeliveryState.QUEUED and attempts:
        return f"{destination}: queued, {attempts} attempt(s)" + (f" ({error})" if error else "")
    if state == DeliveryState.ERRORED:
        return f"{destination}: errored ({error})"
    return f"{destination}: {state}"


def decision_views(
    connection: Connection,
    *,
    proposal_id: int | None = None,
    reviewer: str | None = None,
    actions: tuple[str, ...] = (),
    since: datetime | None = None,
    limit: int | None = None,
) -> list[DecisionView]:
    """Decisions, oldest first (the audit trail)."""
    query = select(_decisions, _messages.c.control_id).select_from(
        _decisions.outerjoin(_messages, _messages.c.id == _decisions.c.message_id)
    )
    d = _decisions.c
    if proposal_id is not None:
        query = query.where(d.proposal_id == proposal_id)
    if reviewer:
        query = query.where(d.reviewer == reviewer)
    if actions:
        query = query.where(d.action.in_(actions))
    if since is not None:
        query = query.where(d.decided_at >= since)
    # The newest ``limit`` ones, shown oldest first like the rest.
    query = query.order_by(d.id) if limit is None else query.order_by(d.id.desc()).limit(limit)
    found = [
        DecisionView(
            r.id,
            r.proposal_id,
            r.study_uid,
            r.patient_id,
            r.action,
            r.previous_status,
            r.reviewer,
            bool(r.automatic),
            r.decided_at,
            r.reason,
            json.loads(r.snapshot or "{}"),
            r.message_id,
            r.control_id or "",
        )
        for r in connection.execute(query)
    ]
    return sorted(found, key=lambda v: v.id)
