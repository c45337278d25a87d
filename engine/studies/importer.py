"""Loading a list of studies exported from a PACS (CSV) into the study index.

Rows are upserted by Study Instance UID (:func:`engine.studies.index.save_batch`); the patient
data is kept as the PACS recorded it, so that the reconciler can compare it with the MPI. Only a
row that names no study (no Study Instance UID) or cannot be read is skipped: an implausible
birth date, sex or name is kept and flagged (:mod:`engine.studies.flags`), and counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path

from sqlalchemy import Engine

from engine.csv_import.importer import CsvImport, ImportReport
from engine.csv_import.rows import RowError, RowProblem
from engine.mpi.demographics import DEMOGRAPHIC_CSV_COLUMNS
from engine.store.schema import table_of
from engine.studies.flags import (
    LABELS,
    recorded_date,
    recorded_sex,
    study_flags,
)
from engine.studies.index import StudyRecord, save_batch
from engine.studies.placeholders import Placeholders
from engine.studies.tables import RECORDED_DATE, RECORDED_SEX, Study

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_TEXT = ("accession", "patient_id", "issuer", *DEMOGRAPHIC_CSV_COLUMNS, "modality", "description")
_LIMITS: dict[str, int] = {
    f.name: table_of(Study).c[f.name].type.length  # type: ignore[attr-defined]
    for f in fields(StudyRecord)
}
_DATES = ("birth_date", "study_date")
NUL = "\x00"


def check_uid(text: str) -> str:
    """A DICOM UID (digits and dots, at most 64 characters); else :class:`RowError`."""
    if not text:
        raise RowError("study_uid", "empty; every row needs the Study Instance UID")
    if len(text) > 64 or not _UID.fullmatch(text):
        raise RowError(
            "study_uid", f"{text[:70]!r} is not a DICOM UID (digits and dots, at most 64)"
        )
    return text


@dataclass(frozen=True, slots=True)
class CheckedStudy:
    """A row to save, and whether a value of it had to be left out or cut (see ``on_note``)."""

    record: StudyRecord
    noted: tuple[str, ...] = ()
    """The columns kept other than recorded (too long for the index)."""


class StudyImport(CsvImport[CheckedStudy]):
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
        settings: Placeholders | None = None,
        on_problem: Callable[[RowProblem], None] = lambda problem: None,
        on_note: Callable[[RowProblem], None] = lambda note: None,
        on_progress: Callable[[int], None] = lambda bytes_read: None,
    ) -> None:
        super().__init__(path, encoding=encoding, on_problem=on_problem, on_progress=on_progress)
        self.store = store
        self.issuer = issuer
        self.settings = settings
        self.on_note = on_note
        """Told of a row kept with a value left out or cut (too long for the index)."""
        self.source = f"import {path.name}"[:200]
        self.today = date.today()
        self._checking = False

    def check(self) -> RowProblem | None:
        self._checking = True  # --strict reads the file twice: notes are told on import
        try:
            return super().check()
        finally:
            self._checking = False

    def check_row(self, line: int, values: dict[str, str]) -> CheckedStudy:
        uid = check_uid(values["study_uid"])
        kept = {column: values.get(column, "") for column in (*_TEXT, "study_date")}
        notes: dict[str, str] = {}
        for column, value in kept.items():
            if NUL in value:  # no store can keep it in text (PostgreSQL refuses the batch)
                kept[column] = value.replace(NUL, "")
                notes[column] = "holds a NUL character (0x00), which is left out"
        for column in _DATES:
            text = kept[column]
            found = recorded_date(text)
            if found is None:
                notes[column] = (
                    f"longer than {RECORDED_DATE} characters and no date; the study is kept"
                    " without it"
                )
            kept[column] = found or ""
        sex = recorded_sex(kept["sex"])
        if sex is None:
            notes["sex"] = (
                f"longer than {RECORDED_SEX} characters and no sex code; the study is kept"
                " without it"
            )
        kept["sex"] = sex or ""
        for column, value in kept.items():
            limit = _LIMITS[column]
            if len(value) > limit:
                notes[column] = f"longer than {limit} characters; the first {limit} are kept"
                kept[column] = value[:limit]
        if notes and not self._checking:
            for column, note in notes.items():
                self.on_note(RowProblem(line, f"{column}: {note}"))
        if not kept["issuer"] and kept["patient_id"]:
            kept["issuer"] = self.issuer
        kept["modality"] = kept["modality"].upper()
        return CheckedStudy(StudyRecord(study_uid=uid, **kept), tuple(notes))

    def write(self, batch: list[CheckedStudy], report: ImportReport) -> None:
        counts = save_batch(self.store, [row.record for row in batch], self.source)
        report.count("rows", counts.total)  # a UID repeated in the batch: its last row wins
        report.count("created", counts.created)
        report.count("updated", counts.updated)
        report.count("unchanged", counts.unchanged)
        for row in batch:
            flagged = {f.field for f in study_flags(row.record, self.settings, today=self.today)}
            flagged.update(row.noted)
            if flagged:
                report.count("flagged")
                for column in flagged:
                    label = LABELS.get(column, column.replace("_", " "))
                    report.flags[label] = report.flags.get(label, 0) + 1
