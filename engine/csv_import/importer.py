"""What the CSV imports share: check each row, skip bad ones with their reason, write in batches.

A subclass names its columns, turns a row into what it stores (:meth:`CsvImport.check_row`,
raising :class:`~engine.csv_import.rows.RowError`) and writes a batch in one transaction
(:meth:`CsvImport.write`). A row is imported whole or not at all; committed batches stay when
an import is interrupted, and running it again is harmless (imports are upserts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from engine.csv_import.rows import CsvRows, RowError, RowProblem

RowT = TypeVar("RowT")


@dataclass(slots=True)
class ImportReport:
    """What an import did, row by row."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    """Rows older than what the store already had (MPI: from the ADT feed): not applied."""
    skipped: int = 0
    flagged: int = 0
    """Rows kept with values flagged as implausible (studies: :mod:`engine.studies.flags`)."""
    flags: dict[str, int] = field(default_factory=dict)
    """How many of them were flagged for each field (``birth date``: 4)."""
    unknown_columns: list[str] = field(default_factory=list)

    def count(self, action: str, how_many: int = 1) -> None:
        setattr(self, action, getattr(self, action) + how_many)


class CsvImport(Generic[RowT]):
    """One import of one file; :meth:`run` does it, reporting problems and progress as it goes."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    batch_size = 20000

    def __init__(
        self,
        path: Path,
        *,
        encoding: str = "utf-8",
        on_problem: Callable[[RowProblem], None] = lambda problem: None,
        on_progress: Callable[[int], None] = lambda bytes_read: None,
    ) -> None:
        self.path = path
        self.encoding = encoding
        self.on_problem = on_problem
        self.on_progress = on_progress

    def check_row(self, line: int, values: dict[str, str]) -> RowT:
        """What to store for one row; :class:`RowError` when it is not valid."""
        raise NotImplementedError

    def write(self, batch: list[RowT], report: ImportReport) -> None:
        """Store a batch of checked rows in one transaction, counting what happened."""
        raise NotImplementedError

    def _open(self) -> CsvRows:
        return CsvRows(
            self.path, required=self.required, optional=self.optional, encoding=self.encoding
        )

    def _checked(self, rows: CsvRows) -> Iterator[RowT | RowProblem]:
        for line, values in rows:
            if isinstance(values, RowProblem):
                yield values
                continue
            try:
                yield self.check_row(line, values)
            except RowError as error:
                yield RowProblem(line, str(error))

    def check(self) -> RowProblem | None:
        """Read the whole file without writing; the first bad row, or None (``--strict``)."""
        with self._open() as rows:
            for count, item in enumerate(self._checked(rows), 1):
                if isinstance(item, RowProblem):
                    return item
                if count % self.batch_size == 0:
                    self.on_progress(rows.bytes_read)
            self.on_progress(rows.bytes_read)
        return None

    def run(self) -> ImportReport:
        """Import every good row; bad ones go to ``on_problem``."""
        report = ImportReport()
        with self._open() as rows:
            report.unknown_columns = rows.unknown
            batch: list[RowT] = []
            for item in self._checked(rows):
                if isinstance(item, RowProblem):
                    report.skipped += 1
                    self.on_problem(item)
                    continue
                batch.append(item)
                if len(batch) >= self.batch_size:
                    self.write(batch, report)
                    self.on_progress(rows.bytes_read)
                    batch = []
            if batch:
                self.write(batch, report)
            self.on_progress(rows.bytes_read)
        return report
