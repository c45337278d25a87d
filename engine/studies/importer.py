"""Loading a list of studies exported from a PACS (CSV) into the study index.

Rows are upserted by Study Instance UID (:func:`engine.studies.index.save_batch`); the patient
data is kept as the PACS recorded it, so that the reconciler can compare it with the MPI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import Engine

from engine.csv_import import CsvImport, ImportReport
from engine.csv_rows import RowError, RowProblem
from engine.mpi.demographics import DEMOGRAPHIC_CSV_COLUMNS, clean_demographics, date_column
from engine.studies.index import StudyRecord, save_batch

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_LIMITS = {"accession": 64, "patient_id": 100, "issuer": 100, "modality": 32, "description": 200}


def check_uid(text: str) -> str:
    """A DICOM UID (digits and dots, at most 64 characters); else :class:`RowError`."""
    if not text:
        raise RowError("study_uid", "empty; every row needs the Study Instance UID")
    if len(text) > 64 or not _UID.fullmatch(text):
        raise RowError(
            "study_uid", f"{text[:70]!r} is not a DICOM UID (digits and dots, at most 64)"
        )
    return text


class StudyImport(CsvImport[StudyRecord]):
    """One import of one list of studies."""

    required = ("study_uid",)
    optional = (
        "accession",
        "patient_id",
        "issuer",
        *DEMOGRAPHIC_CSV_COLUMNS,
        "study_date",
        "modality",
        "description",
    )
    batch_size = 5000

    def __init__(
        self,
        store: Engine,
        path: Path,
        *,
        issuer: str = "",
        encoding: str = "utf-8",
        on_problem: Callable[[RowProblem], None] = lambda problem: None,
        on_progress: Callable[[int], None] = lambda bytes_read: None,
    ) -> None:
        super().__init__(path, encoding=encoding, on_problem=on_problem, on_progress=on_progress)
        self.store = store
        self.issuer = issuer
        self.source = f"import {path.name}"[:200]
        self.latest = date.today() + timedelta(days=1)

    def check_row(self, line: int, values: dict[str, str]) -> StudyRecord:
        uid = check_uid(values["study_uid"])
        for column, limit in _LIMITS.items():
            if len(values.get(column, "")) > limit:
                raise RowError(column, f"longer than {limit} characters")
        return StudyRecord(
            study_uid=uid,
            accession=values.get("accession", ""),
            patient_id=values.get("patient_id", ""),
            issuer=values.get("issuer") or (self.issuer if values.get("patient_id") else ""),
            study_date=date_column(values, "study_date", self.latest),
            modality=values.get("modality", "").upper(),
            description=values.get("description", ""),
            **clean_demographics(values, self.latest),
        )

    def write(self, batch: list[StudyRecord], report: ImportReport) -> None:
        counts = save_batch(self.store, batch, self.source)
        report.count("rows", counts.total)  # a UID repeated in the batch: its last row wins
        report.count("created", counts.created)
        report.count("updated", counts.updated)
        report.count("unchanged", counts.unchanged)
