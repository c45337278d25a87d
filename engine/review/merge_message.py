"""The HL7 message an approval sends: the orphaned study's patient id merged into the MPI patient.

A40 (ADT_A39, merge patient): MRG-1 = the orphan's id^^^issuer, PID-3 = the MRN^^^authority^MR,
PID-5/7/8 (and address, phone) from the MPI, MRG-7 = the name the PACS recorded. A47 (ADT_A30,
change patient identifier list) carries the same segments: the PACS renames the id instead of
merging two patients. O01 (ORM^O01, order control XO: an order update, IHE SWF) moves one study
by its accession number (OBR-18) and Study Instance UID (ZDS-1) to the MPI patient in PID.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.hl7v2.ack import hl7_timestamp, new_control_id
from engine.hl7v2.escaping import escape
from engine.review.settings import ReviewSettings

CHARSET = "UNICODE UTF-8"
STRUCTURES = {"A40": "ADT^A40^ADT_A39", "A47": "ADT^A47^ADT_A30", "O01": "ORM^O01"}


@dataclass(frozen=True, slots=True)
class Person:
    """Demographics as one side recorded them (the MPI, or the PACS for the study)."""

    family_name: str = ""
    given_name: str = ""
    middle_name: str = ""
    birth_date: str = ""
    sex: str = ""
    street: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    phone: str = ""

    @property
    def name(self) -> str:
        """``FAMILY^GIVEN``, as lists show it."""
        return f"{self.family_name}^{self.given_name}"


@dataclass(frozen=True, slots=True)
class StudyOrder:
    """The study an order update moves, with the order the feed recorded for its accession."""

    study_uid: str
    accession: str
    modality: str = ""
    description: str = ""
    placer_number: str = ""
    filler_number: str = ""
    procedure_code: str = ""


@dataclass(frozen=True, slots=True)
class MergeMessage:
    raw: bytes
    control_id: str
    charset: str = CHARSET


def _join(*components: str) -> str:
    return "^".join(escape(c) for c in components).rstrip("^")


def build_merge(
    settings: ReviewSettings,
    *,
    orphan_id: str,
    orphan_issuer: str,
    orphan: Person,
    mrn: str,
    authority: str,
    patient: Person,
    reviewer: str,
    now: datetime,
    order: StudyOrder | None = None,
    control_id: str | None = None,
) -> MergeMessage:
    """The merge message (``settings.merge_message``) for one approval, encoded in UTF-8."""
    trigger = settings.merge_message
    if trigger == "O01":
        if order is None or not order.accession:
            raise ValueError(
                "the study has no accession number, so no order update can name it (OBR-18);"
                " use merge_message A40, or correct the study in the PACS"
            )
    elif not orphan_id:
        raise ValueError(
            "the study has no patient id, so no merge message can name it (MRG-1); correct the"
            " study in the PACS, or reject or defer the proposal"
        )
    if not mrn:
        raise ValueError("the MPI patient has no identifier to put in PID-3")
    stamp = hl7_timestamp(now)
    control = control_id or new_control_id()
    issuer = orphan_issuer or settings.orphan_issuer
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            escape(settings.sending_application),
            escape(settings.sending_facility),
            escape(settings.receiving_application),
            escape(settings.receiving_facility),
            stamp,
            "",
            STRUCTURES[trigger],
            control,
            "P",
            settings.version,
            "",
            "",
            "",
            "",
            "",
            CHARSET,
        ]
    )
    evn = f"EVN|{trigger}|{stamp}|||{escape(reviewer)}"
    address = _join(patient.street, "", patient.city, patient.state, patient.postal_code)
    pid = "|".join(
        [
            "PID",
            "1",
            "",
            _join(mrn, "", "", authority, "MR"),
            "",
            _join(patient.family_name, patient.given_name, patient.middle_name),
            "",
            patient.birth_date,
            patient.sex,
            "",
            "",
            address,
            "",
            escape(patient.phone),
        ]
    ).rstrip("|")
    if trigger == "O01":
        assert order is not None
        segments = [msh, pid, *_order_update(order, stamp, settings.sending_application)]
    else:
        prior_name = _join(orphan.family_name, orphan.given_name, orphan.middle_name)
        mrg = f"MRG|{_join(orphan_id, '', '', issuer)}||||||{prior_name}".rstrip("|")
        segments = [msh, evn, pid, mrg]
    text = "\r".join(segments) + "\r"
    return MergeMessage(text.encode("utf-8"), control)


def _order_update(order: StudyOrder, stamp: str, application: str) -> list[str]:
    placer, filler = escape(order.placer_number), escape(order.filler_number)
    procedure = escape(order.procedure_code) or _join("", order.description)
    obr = ["OBR", "1", placer, filler, procedure, *[""] * 13, escape(order.accession)]
    obr += [*[""] * 5, escape(order.modality)]
    return [
        f"ORC|XO|{placer}|{filler}||||||{stamp}",
        "|".join(obr).rstrip("|"),
        f"ZDS|{_join(order.study_uid, application, 'Application', 'DICOM')}",
    ]
