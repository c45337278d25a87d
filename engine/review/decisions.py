"""Deciding proposals: approve (and send the merge), reject, defer — each audited, each safe.

Safety rules, enforced here and in the database:

- Nothing is approved without a recorded decision (a reviewer, or an operator's automatic band).
- One orphan, one patient: once a study's proposal is approved no other can be (checked here,
  and a partial unique index refuses a second approved row even under a race).
- A proposal whose candidate has since been merged follows the merge (``upkeep.refresh``).
- The approval, its audit record, the merge message and its queued deliveries are one
  transaction: either the PACS will get the merge, or nothing was decided.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from engine.errors import CrosswalkError
from engine.hl7v2.check import examine
from engine.merge_targets.job import ArchiveJob, Identity
from engine.merge_targets.settings import MergeTargetSettings
from engine.mpi.tables import Order
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.review.merge_message import MergeMessage, StudyOrder, build_merge
from engine.review.settings import SOURCE, ReviewSettings
from engine.review.tables import Action, ReviewDecision
from engine.review.worklist import ReviewFilter, ReviewRow, row, rows
from engine.routes.router import Routing
from engine.store.database import for_writing
from engine.store.operations import queued_delivery
from engine.store.queue import touch_destinations
from engine.store.received import message_row
from engine.store.schema import Delivery, Message, MessageStatus, table_of

_proposals = table_of(Proposal)
_decisions = table_of(ReviewDecision)
_messages = table_of(Message)
_deliveries = table_of(Delivery)
_orders = table_of(Order)

JOB_ROUTE = "merge_targets"
"""The ``route`` of a merge target's job (it is queued by the review, not by a route)."""
AUTOMATIC_REVIEWER = "crosswalk (auto)"
ENGINE_REVIEWER = "crosswalk"


class ReviewError(CrosswalkError):
    """A decision that cannot be made, with the reason in words for the reviewer.

    ``brief`` says it without values (no names, no reviewer's free text, no routing reason
    quoting a field): what the audit trail records.
    """

    def __init__(self, text: str, brief: str | None = None) -> None:
        super().__init__(text)
        self.brief = brief or text


@dataclass(frozen=True, slots=True)
class Decided:
    proposal_id: int
    action: str
    message_id: int | None = None
    control_id: str = ""
    destinations: tuple[str, ...] = ()
    closed: tuple[int, ...] = ()
    """Other open proposals of the same study, closed by an approval."""


def snapshot(item: ReviewRow, **extra: Any) -> str:
    """What the reviewer saw, as JSON, kept with the decision."""
    study = item.study
    return json.dumps(
        {
            "proposal": {
                "id": item.proposal_id,
                "probability": item.probability,
                "band": item.band,
                "rank": item.rank,
                "status": item.status,
                "match_weight": item.match_weight,
                "evidence": item.evidence,
            },
            "study": {
                "study_uid": item.study_uid,
                "patient_id": study.patient_id,
                "issuer": study.issuer,
                "study_date": study.study_date,
                "modality": study.modality,
                "accession": study.accession,
                "description": study.description,
                **dataclasses.asdict(study.person),
            },
            "patient": {
                "id": item.patient_id,
                "mrn": item.mrn,
                "authority": item.authority,
                **dataclasses.asdict(item.patient),
            },
            **extra,
        },
        ensure_ascii=False,
    )


def record(
    connection: Connection,
    item: ReviewRow,
    action: str,
    reviewer: str,
    now: datetime,
    *,
    reason: str = "",
    automatic: bool = False,
    message_id: int | None = None,
    new_status: str | None = None,
    **extra: Any,
) -> None:
    """Audit one decision (and set the proposal's new status)."""
    if new_status is not None:
        connection.execute(
            update(_proposals)
            .where(_proposals.c.id == item.proposal_id)
            .values(status=new_status, updated_at=now)
        )
    connection.execute(
        insert(_decisions).values(
            proposal_id=item.proposal_id,
            study_uid=item.study_uid,
            patient_id=item.patient_id,
            action=action,
            previous_status=item.status,
            reviewer=reviewer[:100],
            automatic=automatic,
            decided_at=now,
            reason=reason,
            snapshot=snapshot(item, **extra),
            message_id=message_id,
        )
    )


def _locked(connection: Connection, proposal_id: int, mrn_authority: str) -> ReviewRow:
    if connection.dialect.name == "postgresql":
        # Two reviewers deciding the same study take turns (SQLite: BEGIN IMMEDIATE already).
        uid = select(_proposals.c.study_uid).where(_proposals.c.id == proposal_id)
        connection.execute(
            select(_proposals.c.id).where(_proposals.c.study_uid.in_(uid)).with_for_update()
        )
    found = row(connection, proposal_id, mrn_authority)
    if found is None:
        raise ReviewError(f"no proposal {proposal_id}")
    return found


def _refuse_decided(connection: Connection, item: ReviewRow, allowed: tuple[str, ...]) -> None:
    if item.status in allowed:
        return
    last = connection.execute(
        select(_decisions.c.reviewer, _decisions.c.decided_at, _decisions.c.reason)
        .where(_decisions.c.proposal_id == item.proposal_id)
        .order_by(_decisions.c.id.desc())
        .limit(1)
    ).first()
    by = f" by {last.reviewer} at {last.decided_at:%Y-%m-%d %H:%M} UTC" if last else ""
    why = f" ({last.reason})" if last and last.reason else ""
    raise ReviewError(
        f"proposal {item.proposal_id} is {item.status}{by}{why}",
        f"proposal {item.proposal_id} is {item.status}",
    )


RouteMerge = Callable[[bytes, str | None, str], Routing]
"""Routes a merge message (raw, charset, source): the engine's router, given by the caller."""


def approve(
    store: Engine,
    settings: ReviewSettings,
    route: RouteMerge,
    proposal_id: int,
    reviewer: str,
    *,
    reason: str = "",
    automatic: bool = False,
    now: datetime | None = None,
) -> Decided:
    """Approve a proposal: build its merge message, route it (source ``review``), queue it for
    the PACS, close the study's other proposals, audit it — all in one transaction.

    ``route`` is the configured router's (``Router(config).route``): the review routes its
    message the way the engine would, without building the engine."""
    now = now or datetime.now(UTC)
    try:
        with for_writing(store).begin() as connection:
            item = _locked(connection, proposal_id, settings.mrn_authority)
            _refuse_decided(connection, item, ProposalStatus.OPEN)
            _refuse_second_approval(connection, item)
            if not item.study.known:
                raise ReviewError(
                    f"study {item.study_uid} is no longer in the study index",
                    "its study is no longer in the study index",
                )
            message, routing = _merge_for(connection, settings, route, item, reviewer, now)
            message_id = _store_message(connection, message.raw, message.charset, routing, now)
            rows_to_queue = routing.delivery_rows() + archive_jobs(settings, item, message)
            deliveries = [queued_delivery(values, message_id, now) for values in rows_to_queue]
            connection.execute(insert(_deliveries), deliveries)
            destinations = tuple(sorted({d["destination"] for d in deliveries}))
            touch_destinations(connection, destinations, now)
            record(
                connection,
                item,
                Action.APPROVED,
                reviewer,
                now,
                reason=reason,
                automatic=automatic,
                message_id=message_id,
                new_status=ProposalStatus.APPROVED,
                merge={"control_id": message.control_id, "destinations": list(destinations)},
            )
            closed = _close_siblings(connection, item, settings.mrn_authority, now)
            return Decided(
                proposal_id, Action.APPROVED, message_id, message.control_id, destinations, closed
            )
    except IntegrityError:
        raise ReviewError(
            f"proposal {proposal_id}: its study was approved for another patient meanwhile"
        ) from None


def _refuse_second_approval(connection: Connection, item: ReviewRow) -> None:
    other = connection.execute(
        select(_proposals.c.id, _proposals.c.patient_id).where(
            _proposals.c.study_uid == item.study_uid,
            _proposals.c.status == ProposalStatus.APPROVED,
        )
    ).first()
    if other is not None:
        raise ReviewError(
            f"study {item.study_uid} is already approved for MPI patient {other.patient_id}"
            f" (proposal {other.id}); one orphan cannot be merged into two patients",
            f"its study is already approved (proposal {other.id})",
        )


def _study_order(connection: Connection, item: ReviewRow) -> StudyOrder:
    study = item.study
    found = None
    if study.accession:
        found = connection.execute(
            select(_orders.c.placer_number, _orders.c.filler_number, _orders.c.procedure_code)
            .where(_orders.c.accession == study.accession)
            .order_by(_orders.c.id.desc())
            .limit(1)
        ).first()
    return StudyOrder(
        item.study_uid,
        study.accession,
        study.modality,
        study.description,
        *(tuple(found) if found else ()),
    )


def _merge_for(
    connection: Connection,
    settings: ReviewSettings,
    route: RouteMerge,
    item: ReviewRow,
    reviewer: str,
    now: datetime,
) -> tuple[MergeMessage, Routing]:
    try:
        message = build_merge(
            settings,
            orphan_id=item.study.patient_id,
            orphan_issuer=item.study.issuer,
            orphan=item.study.person,
            mrn=item.mrn,
            authority=item.authority,
            patient=item.patient,
            reviewer=reviewer,
            now=now,
            order=_study_order(connection, item) if settings.merge_message == "O01" else None,
        )
    except ValueError as error:
        raise ReviewError(f"proposal {item.proposal_id}: {error}") from None
    routing = route(message.raw, message.charset, SOURCE)
    targets = [name for name, target in settings.merge_targets.items() if _holds(target, item)]
    if routing.status == MessageStatus.FILTERED and targets:
        # No route sends the message: the archives are changed directly (merge targets).
        reason = f"applied by merge target(s) {', '.join(targets)}"
        routing = Routing(MessageStatus.ROUTED, reason, routing.outcomes)
    elif routing.status != MessageStatus.ROUTED or not (routing.outbound or targets):
        raise ReviewError(
            f"proposal {item.proposal_id}: the merge message would not reach the PACS"
            f" ({routing.reason or 'no route has source: ' + SOURCE}); nothing was approved",
            f"proposal {item.proposal_id}: the merge message would not reach the PACS",
        )
    return message, routing


def _holds(target: MergeTargetSettings, item: ReviewRow) -> bool:
    """Whether the target's archive holds the study (one named by ``archive:`` holds only the
    studies pulled from it)."""
    return not target.archive or item.study.source.startswith(f"archive:{target.archive}/")


def archive_jobs(
    settings: ReviewSettings, item: ReviewRow, message: MergeMessage
) -> list[dict[str, object]]:
    """A job per merge target holding the study: move it to the MPI patient's identity."""
    study, patient = item.study, item.patient
    job = ArchiveJob(
        item.study_uid,
        Identity(study.patient_id, study.issuer),
        Identity.of_patient(
            item.mrn,
            item.authority,
            patient.family_name,
            patient.given_name,
            patient.middle_name,
            patient.birth_date,
            patient.sex,
        ),
        item.proposal_id,
    )
    return [
        {
            "route": JOB_ROUTE,
            "destination": name,
            "partition": 0,
            "payload": job.encode(),
            "control_id": message.control_id,
        }
        for name, target in settings.merge_targets.items()
        if _holds(target, item)
    ]


def _store_message(
    connection: Connection, raw: bytes, charset: str, routing: Routing, now: datetime
) -> int:
    examination = examine(raw, default_charset=charset)
    if examination.problem is not None:  # a bug in build_merge, never the reviewer's input
        raise ReviewError(
            f"the merge message is not valid HL7: {examination.problem.text}",
            "the merge message is not valid HL7",
        )
    values = message_row(raw, len(raw), examination, now, SOURCE, "crosswalk review")
    values.update(status=routing.status, status_reason=routing.reason, ack_code="", ack=b"")
    return int(
        connection.execute(insert(_messages).values(values).returning(_messages.c.id)).scalar_one()
    )


def close(connection: Connection, item: ReviewRow, reason: str, now: datetime) -> None:
    """Close an open proposal as the engine's own decision (audited, with ``reason``)."""
    record(
        connection,
        item,
        Action.CLOSED,
        ENGINE_REVIEWER,
        now,
        reason=reason,
        automatic=True,
        new_status=ProposalStatus.CLOSED,
    )


def _close_siblings(
    connection: Connection, approved: ReviewRow, mrn_authority: str, now: datetime
) -> tuple[int, ...]:
    ids = tuple(
        connection.execute(
            select(_proposals.c.id).where(
                _proposals.c.study_uid == approved.study_uid,
                _proposals.c.id != approved.proposal_id,
                _proposals.c.status.in_(ProposalStatus.OPEN),
            )
        ).scalars()
    )
    reason = f"the study was approved for another patient (proposal {approved.proposal_id})"
    siblings = rows(connection, ReviewFilter(statuses=(), proposal_ids=ids), mrn_authority)
    for sibling in siblings:
        close(connection, sibling, reason, now)
    return tuple(sibling.proposal_id for sibling in siblings)


def reject(
    store: Engine, proposal_id: int, reviewer: str, reason: str, *, mrn_authority: str = ""
) -> Decided:
    """Reject a proposal as "not a match": no later run proposes this pair again."""
    if not reason.strip():
        raise ReviewError("a rejection needs a reason (--reason)")
    return _simple(
        store,
        proposal_id,
        reviewer,
        reason,
        Action.REJECTED,
        ProposalStatus.REJECTED,
        ProposalStatus.OPEN,
        mrn_authority,
    )


def defer(
    store: Engine, proposal_id: int, reviewer: str, reason: str = "", *, mrn_authority: str = ""
) -> Decided:
    """Put a proposal aside for later (out of the ``review next`` queue)."""
    return _simple(
        store,
        proposal_id,
        reviewer,
        reason,
        Action.DEFERRED,
        ProposalStatus.DEFERRED,
        (ProposalStatus.PENDING,),
        mrn_authority,
    )


def _simple(
    store: Engine,
    proposal_id: int,
    reviewer: str,
    reason: str,
    action: str,
    status: str,
    allowed: tuple[str, ...],
    mrn_authority: str,
) -> Decided:
    now = datetime.now(UTC)
    with for_writing(store).begin() as connection:
        item = _locked(connection, proposal_id, mrn_authority)
        _refuse_decided(connection, item, allowed)
        record(connection, item, action, reviewer, now, reason=reason, new_status=status)
    return Decided(proposal_id, action)
