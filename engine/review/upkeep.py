"""Keeping open proposals true to the MPI and the study index, and the automatic band.

Run before every review command (and after ``reconcile run``): a proposal whose candidate was
merged since follows the merge to the surviving patient; proposals of a study the feed resolved
on its own (its patient id is now a live MPI identifier) or that left the index are closed.
Each change is audited as the engine's own decision.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, and_, or_, select, update

from engine.mpi.tables import Patient, PatientIdentifier
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.review.decisions import (
    AUTOMATIC_REVIEWER,
    ENGINE_REVIEWER,
    Decided,
    ReviewError,
    RouteMerge,
    approve,
    close,
    record,
)
from engine.review.settings import ReviewSettings
from engine.review.tables import Action, ReviewDecision
from engine.review.worklist import ReviewFilter, ReviewRow, rows
from engine.store.database import for_writing
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of
from engine.studies.orphans import Orphan, classify
from engine.studies.tables import Study

_proposals = table_of(Proposal)
_patients = table_of(Patient)
_identifiers = table_of(PatientIdentifier)
_studies = table_of(Study)
_decisions = table_of(ReviewDecision)


@dataclass(slots=True)
class Refreshed:
    followed: int = 0
    closed: int = 0


def _survivors(connection: Connection, merged: dict[int, int]) -> dict[int, int]:
    """Each merged patient's final survivor (merges can chain: A → B → C)."""
    survivors: dict[int, int] = {}
    known = dict(merged)
    for start in list(merged):
        seen = {start}
        current = known[start]
        while True:
            if current not in known:
                found = connection.execute(
                    select(_patients.c.merged_into).where(_patients.c.id == current)
                ).scalar()
                if found is None:
                    break
                known[current] = found
            if known[current] in seen:  # a cycle would be a corrupt MPI; stop where we are
                break
            seen.add(current)
            current = known[current]
        survivors[start] = current
    return survivors


def refresh(
    store: Engine, mrn_authority: str = "", study_uids: list[str] | None = None
) -> Refreshed:
    """Follow merges and close resolved studies' proposals (of ``study_uids`` only, if given)."""
    done = Refreshed()
    now = datetime.now(UTC)
    with for_writing(store).begin() as connection:
        query = (
            select(_proposals.c.id, _patients.c.id, _patients.c.merged_into)
            .select_from(_proposals.join(_patients, _patients.c.id == _proposals.c.patient_id))
            .where(
                _proposals.c.status.in_(ProposalStatus.OPEN),
                _patients.c.merged_into.is_not(None),
            )
        )
        if study_uids is not None:
            query = query.where(in_values(_proposals.c.study_uid, study_uids))
        moved = connection.execute(query).all()
        survivors = _survivors(connection, {patient: into for _, patient, into in moved})
        ids = tuple(proposal_id for proposal_id, _, _ in moved)
        for item in rows(connection, ReviewFilter(statuses=(), proposal_ids=ids), mrn_authority):
            survivor = survivors[item.patient_id]
            twin = connection.execute(
                select(_proposals.c.id).where(
                    _proposals.c.study_uid == item.study_uid, _proposals.c.patient_id == survivor
                )
            ).scalar()
            merged = f"patient {item.patient_id} was merged into patient {survivor}"
            if twin is not None:
                close(
                    connection,
                    item,
                    f"{merged}, which has its own proposal {twin} for this study",
                    now,
                )
                done.closed += 1
                continue
            connection.execute(
                update(_proposals)
                .where(_proposals.c.id == item.proposal_id)
                .values(patient_id=survivor, updated_at=now)
            )
            record(
                connection,
                item,
                Action.FOLLOWED_MERGE,
                ENGINE_REVIEWER,
                now,
                automatic=True,
                reason=merged,
                survivor=survivor,
            )
            done.followed += 1
    done.closed += _close_resolved(store, mrn_authority, study_uids, now)
    return done


def _close_resolved(
    store: Engine, mrn_authority: str, study_uids: list[str] | None, now: datetime
) -> int:
    # Only a study whose id some MPI identifier now carries, or that left the index, can have
    # stopped being an orphan: classify just those.
    p, s, i = _proposals.c, _studies.c, _identifiers.c
    query = (
        select(p.study_uid)
        .distinct()
        .select_from(
            _proposals.outerjoin(_studies, s.study_uid == p.study_uid).outerjoin(
                _identifiers, and_(i.value == s.patient_id, s.patient_id != "")
            )
        )
        .where(p.status.in_(ProposalStatus.OPEN), or_(s.id.is_(None), i.id.is_not(None)))
    )
    if study_uids is not None:  # asked about a few studies: never read every open proposal
        query = query.where(in_values(p.study_uid, study_uids))
    with store.connect() as connection:
        suspects = set(connection.execute(query).scalars())
    if not suspects:
        return 0
    orphans = {
        found.study.study_uid
        for found in classify(store, study_uids=sorted(suspects))
        if isinstance(found, Orphan)
    }
    resolved = sorted(suspects - orphans)
    if not resolved:
        return 0
    closed = 0
    with for_writing(store).begin() as connection:
        for chunk in chunks(resolved):
            ids = connection.execute(
                select(_proposals.c.id).where(
                    in_values(_proposals.c.study_uid, chunk),
                    _proposals.c.status.in_(ProposalStatus.OPEN),
                )
            ).scalars()
            wanted = ReviewFilter(statuses=ProposalStatus.OPEN, proposal_ids=tuple(ids))
            for item in rows(connection, wanted, mrn_authority):
                reason = (
                    "the study is no longer an orphan: its patient id is now known to the MPI"
                    if item.study.known
                    else "the study is no longer in the study index"
                )
                close(connection, item, reason, now)
                closed += 1
    return closed


@dataclass(slots=True)
class AutoApproved:
    approved: list[Decided] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def auto_approve(store: Engine, settings: ReviewSettings, route: RouteMerge) -> AutoApproved:
    """Approve the pending proposals of the operator's automatic band (``review:
    auto_approve_band``), one per study; nothing when no band is configured. ``route`` routes
    each merge message (see :func:`~engine.review.decisions.approve`)."""
    result = AutoApproved()
    if not settings.auto_approve_band:
        return result
    wanted = ReviewFilter(
        bands=(settings.auto_approve_band,),
        min_probability=settings.auto_approve_min_probability,
    )
    with store.connect() as connection:
        chosen = rows(connection, wanted, settings.mrn_authority)
    reason = (
        f"automatic band {settings.auto_approve_band},"
        f" probability >= {settings.auto_approve_min_probability}"
    )
    for item in one_per_study(chosen):
        try:
            result.approved.append(
                approve(
                    store,
                    settings,
                    route,
                    item.proposal_id,
                    AUTOMATIC_REVIEWER,
                    reason=reason,
                    automatic=True,
                )
            )
        except ReviewError as error:
            result.refused.append(str(error))
    return result


def automatic_approvals(connection: Connection) -> set[int]:
    """Proposals an automatic band approved: the model's own decisions, which the reconciler
    does not learn from as it learns from reviewers'."""
    query = select(_decisions.c.proposal_id).where(
        _decisions.c.action == Action.APPROVED, _decisions.c.automatic.is_(True)
    )
    return set(connection.execute(query).scalars())


def one_per_study(items: list[ReviewRow]) -> list[ReviewRow]:
    """Items whose study appears only once among them (a batch never picks between two)."""
    counts = Counter(item.study_uid for item in items)
    return [i for i in items if counts[i.study_uid] == 1]
