"""What one approval asks of a merge target, as it waits in the target's queue: the study (by
its Study Instance UID) and the identity it must carry afterwards, as JSON (stored encrypted like
every delivery's payload)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

VERSION = 1

DICOM_SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O"}
"""HL7 administrative sex (table 0001) → DICOM Patient's Sex (M, F, O); U and unknown: empty."""


class JobError(ValueError):
    """A queued job that cannot be read (written by another version, or damaged)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The patient tags a study carries in DICOM terms."""

    patient_id: str
    issuer: str = ""
    name: str = ""
    """``FAMILY^GIVEN^MIDDLE`` (DICOM PN), trailing empty components dropped."""
    birth_date: str = ""
    """``YYYYMMDD``."""
    sex: str = ""
    """``M``, ``F``, ``O`` or empty."""

    @classmethod
    def of_patient(
        cls,
        patient_id: str,
        issuer: str,
        family_name: str,
        given_name: str,
        middle_name: str,
        birth_date: str,
        sex: str,
    ) -> Identity:
        """The identity of an MPI patient (HL7 values) as DICOM tags."""
        name = "^".join((family_name, given_name, middle_name)).rstrip("^")
        return cls(
            patient_id,
            issuer,
            name,
            birth_date.replace("-", ""),
            DICOM_SEX.get(sex.strip().upper(), ""),
        )

    def tags(self) -> dict[str, str]:
        """The DICOM keywords and values a changed study carries."""
        return {
            "PatientID": self.patient_id,
            "IssuerOfPatientID": self.issuer,
            "PatientName": self.name,
            "PatientBirthDate": self.birth_date,
            "PatientSex": self.sex,
        }


@dataclass(frozen=True, slots=True)
class ArchiveJob:
    """Move one study to ``new`` (the MPI patient's identity) in a merge target."""

    study_uid: str
    old: Identity
    """The patient the study carried when it was approved (for the record and the checks)."""
    new: Identity
    proposal_id: int

    def encode(self) -> bytes:
        return json.dumps({"version": VERSION, **asdict(self)}, ensure_ascii=False).encode()

    @classmethod
    def decode(cls, payload: bytes) -> ArchiveJob:
        """The job from its payload; ``JobError`` when it cannot be read."""
        try:
            data = json.loads(payload)
            if data.get("version") != VERSION:
                raise JobError(f"a merge job of version {data.get('version')!r}, not {VERSION}")
            return cls(
                str(data["study_uid"]),
                Identity(**data["old"]),
                Identity(**data["new"]),
                int(data["proposal_id"]),
            )
        except JobError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise JobError(f"the merge job cannot be read ({type(error).__name__})") from None
