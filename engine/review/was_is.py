"""The was-is list: each approved study's old patient id → the MPI patient it now belongs to, in
the column layouts that PACS migration and tag-morphing tools import (``export-was-is
--format``). Every layout is read from the approvals' snapshots: what was decided and sent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from engine.merge_targets.job import Identity
from engine.review.tables import Action
from engine.review.worklist import decision_views, merge_deliveries


@dataclass(frozen=True, slots=True)
class Approval:
    """One approved study, as its decision recorded it."""

    old_patient_id: str
    old_issuer: str
    mrn: str
    authority: str
    study_uid: str
    accession: str
    study_date: str
    new: Identity
    """The MPI patient's identity in DICOM terms (as a merge target sets it)."""
    approved_by: str
    approved_at: str
    proposal_id: int
    merge_control_id: str
    delivery: str


def approvals(connection: Connection) -> list[Approval]:
    """Every approval, oldest first."""
    decided = decision_views(connection, actions=(Action.APPROVED,))
    deliveries = merge_deliveries(connection, [d.proposal_id for d in decided])
    found = []
    for decision in decided:
        study = decision.snapshot.get("study", {})
        patient = decision.snapshot.get("patient", {})
        mrn, authority = patient.get("mrn", ""), patient.get("authority", "")
        found.append(
            Approval(
                study.get("patient_id", ""),
                study.get("issuer", ""),
                mrn,
                authority,
                decision.study_uid,
                study.get("accession", ""),
                study.get("study_date", ""),
                Identity.of_patient(
                    mrn,
                    authority,
                    *(patient.get(key, "") for key in _PERSON),
                ),
                decision.reviewer,
                decision.decided_at.isoformat(timespec="seconds"),
                decision.proposal_id,
                decision.control_id,
                deliveries.get(decision.proposal_id, ""),
            )
        )
    return found


_PERSON = ("family_name", "given_name", "middle_name", "birth_date", "sex")


@dataclass(frozen=True)
class Layout:
    """A column layout: its header, one approval's row, and whether rows are per patient."""

    columns: tuple[str, ...]
    row: Callable[[Approval], dict[str, Any]]
    per_patient: bool = False
    """One row per old patient id (a lookup table), instead of one per study."""


LAYOUTS: dict[str, Layout] = {
    "crosswalk": Layout(
        (
            "old_patient_id",
            "old_issuer",
            "mrn",
            "authority",
            "study_uid",
            "accession",
            "study_date",
            "approved_by",
            "approved_at",
            "proposal_id",
            "merge_control_id",
            "delivery",
        ),
        lambda a: {
            "old_patient_id": a.old_patient_id,
            "old_issuer": a.old_issuer,
            "mrn": a.mrn,
            "authority": a.authority,
            "study_uid": a.study_uid,
            "accession": a.accession,
            "study_date": a.study_date,
            "approved_by": a.approved_by,
            "approved_at": a.approved_at,
            "proposal_id": a.proposal_id,
            "merge_control_id": a.merge_control_id,
            "delivery": a.delivery,
        },
    ),
    "migration": Layout(
        (
            "old_patient_id",
            "old_issuer",
            "new_patient_id",
            "new_issuer",
            "study_instance_uid",
            "accession_number",
        ),
        lambda a: {
            "old_patient_id": a.old_patient_id,
            "old_issuer": a.old_issuer,
            "new_patient_id": a.mrn,
            "new_issuer": a.authority,
            "study_instance_uid": a.study_uid,
            "accession_number": a.accession,
        },
    ),
    "patient-map": Layout(
        ("old_patient_id", "old_issuer", "new_patient_id", "new_issuer"),
        lambda a: {
            "old_patient_id": a.old_patient_id,
            "old_issuer": a.old_issuer,
            "new_patient_id": a.mrn,
            "new_issuer": a.authority,
        },
        per_patient=True,
    ),
    "dicom-tags": Layout(
        (
            "StudyInstanceUID",
            "AccessionNumber",
            "OtherPatientIDs",
            "PatientID",
            "IssuerOfPatientID",
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
        ),
        lambda a: {
            "StudyInstanceUID": a.study_uid,
            "AccessionNumber": a.accession,
            "OtherPatientIDs": a.old_patient_id,
            **a.new.tags(),
        },
    ),
}
"""``--format`` name → layout (documented with an example each in docs/review.md)."""


@dataclass
class WasIs:
    """The rows of one layout, and the approvals it could not hold (with why)."""

    rows: list[dict[str, Any]]
    left_out: list[str] = field(default_factory=list)


def was_is(found: list[Approval], layout: str) -> WasIs:
    """``found`` in ``layout``. A per-patient layout holds one row per old patient id: an id
    approved into two different patients (a reused temporary id) cannot be one row, so it is
    left out and said, as is a study without an old patient id."""
    shape = LAYOUTS[layout]
    if not shape.per_patient:
        return WasIs([shape.row(a) for a in found])
    targets: dict[tuple[str, str], dict[tuple[str, str], Approval]] = {}
    result = WasIs([])
    for approval in found:
        if not approval.old_patient_id:
            result.left_out.append(
                f"proposal {approval.proposal_id}: the study had no patient id (it is in the"
                " per-study layouts)"
            )
            continue
        old = (approval.old_patient_id, approval.old_issuer)
        targets.setdefault(old, {}).setdefault((approval.mrn, approval.authority), approval)
    for (old_id, old_issuer), new in targets.items():
        if len(new) > 1:
            patients = ", ".join(_cx(mrn, authority) for mrn, authority in sorted(new))
            result.left_out.append(
                f"{_cx(old_id, old_issuer)} was approved into {len(new)} patients ({patients}):"
                " one id cannot map to two; use --format migration (one row per study)"
            )
            continue
        result.rows.append(shape.row(next(iter(new.values()))))
    return result


def _cx(identifier: str, authority: str) -> str:
    """An identifier as HL7 writes it with its authority (CX: ``ID^^^AUTHORITY``)."""
    return f"{identifier}^^^{authority}" if authority else identifier
