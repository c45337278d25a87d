"""Bulk load of an existing MPI export (CSV) into the MPI: ``crosswalk mpi import``.

Rows are upserted by (issuer, mrn): a new identifier creates a patient, a known one updates its
patient by the same rules as an ADT update (:func:`engine.mpi.feed.register`), with the
export's time as event time, so a later ADT message wins over the export and an older one
does not. A bad row is reported with its line and reason and skipped whole; good rows are
committed a batch at a time, so an interrupted import keeps what it committed and can simply
be run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from engine.csv_import.importer import CsvImport, ImportReport
from engine.csv_import.rows import RowError, RowProblem
from engine.mpi import bounds
from engine.mpi.demographics import (
    DEMOGRAPHIC_CSV_COLUMNS,
    Demographics,
    Identifier,
    clean_demographics,
    demographics_from_columns,
)
from engine.mpi.feed import MpiRefusal, register
from engine.mpi.records import MpiRecords, event
from engine.store.database import raw_transaction
from engine.store.fastsql import Statements

IDENTIFIER_TYPE = "MR"


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    mrn: str
    issuer: str
    columns: dict[str, str]
    """The ``patients`` columns (:func:`clean_demographics`)."""

    def demographics(self) -> Demographics:
        return demographics_from_columns(
            Identifier(self.mrn, self.issuer, IDENTIFIER_TYPE), self.columns
        )


def export_time(path: Path) -> str:
    """The event time of an export: its file's modification time (local, like ADT times)."""
    return event_time_of(datetime.fromtimestamp(path.stat().st_mtime))


def event_time_of(moment: datetime) -> str:
    """A moment as the MPI's sortable event time text."""
    return moment.strftime("%Y%m%d%H%M%S.%f")


class MpiImport(CsvImport[_Row]):
    """One import of one MPI export."""

    required = ("mrn",)
    optional = ("issuer", *DEMOGRAPHIC_CSV_COLUMNS)

    def __init__(
        self,
        store: Engine,
        path: Path,
        *,
        as_of: str | None = None,
        issuer: str = "",
        encoding: str = "utf-8",
        command: str = "",
        on_problem: Callable[[RowProblem], None] = lambda problem: None,
        on_progress: Callable[[int], None] = lambda bytes_read: None,
    ) -> None:
        super().__init__(path, encoding=encoding, on_problem=on_problem, on_progress=on_progress)
        self.store = store
        self.as_of = as_of or export_time(path)
        self.issuer = issuer
        self.command = bounds.fit(
            command or f"mpi import {path.name}", bounds.events.command, "the command"
        )
        self.statements = Statements(store)
        self.latest_birth = date.today() + timedelta(days=1)

    def check_row(self, line: int, values: dict[str, str]) -> _Row:
        mrn = values["mrn"]
        if not mrn:
            raise RowError("mrn", "empty; every row needs the patient's identifier")
        issuer = values.get("issuer") or self.issuer
        # Identifiers are never cut (cut, one could name another patient): refused whole.
        for column, value, target in (
            ("mrn", mrn, bounds.identifiers.value),
            ("issuer", issuer, bounds.identifiers.authority),
        ):
            problem = bounds.problem(value, target)
            if problem:
                raise RowError(column, problem)
        return _Row(line, mrn, issuer, clean_demographics(values, self.latest_birth))

    def write(self, batch: list[_Row], report: ImportReport) -> None:
        with raw_transaction(self.store, bulk=True) as cursor:
            records = MpiRecords(cursor, self.statements)
            known = records.known_identifiers(list({row.mrn for row in batch}))
            new: list[_Row] = []
            again: list[_Row] = []
            for row in batch:
                key = (row.mrn, row.issuer)
                if key in known:
                    again.append(row)
                else:
                    new.append(row)
                    known.add(key)  # a second row for it in this batch is an update
            self._create(records, new)
            report.count("rows", len(new))
            report.count("created", len(new))
            for row in again:
                report.rows += 1
                cursor.execute("SAVEPOINT mpi_import_row")
                try:
                    applied = register(
                        records,
                        row.demographics(),
                        self.as_of,
                        label="import",
                        command=self.command,
                        record_no_change=False,
                    )
                except MpiRefusal as error:
                    cursor.execute("ROLLBACK TO SAVEPOINT mpi_import_row")
                    report.skipped += 1
                    self.on_problem(RowProblem(row.line, f"mrn: {error}"))
                else:
                    report.count(applied.action)
                cursor.execute("RELEASE SAVEPOINT mpi_import_row")

    def _create(self, records: MpiRecords, rows: list[_Row]) -> None:
        """Patients new to the MPI, inserted in bulk with their identifier and history."""
        if not rows:
            return
        ids = records.allocate_patient_ids(len(rows))
        patients = []
        identifiers = []
        for pid, row in zip(ids, rows, strict=True):
            patients.append({**row.columns, "id": pid})
            identifiers.append({"patient_id": pid, "value": row.mrn, "authority": row.issuer})
        records.add_patients(patients, self.as_of)
        records.add_identifiers(
            identifiers, same={"type_code": IDENTIFIER_TYPE, "merged_from": None}
        )
        template = event(None, "created", self.as_of, None, "import", self.command)
        del template["patient_id"]
        records.add_events([{"patient_id": pid} for pid in ids], same=template)
