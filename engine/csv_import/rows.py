"""Reading CSV exports row by row, for the MPI and study imports.

A header is required; its names are matched without regard to case or surrounding spaces.
Required columns must be present, optional ones may be missing, unknown ones are reported and
ignored. Each row comes with its line number, so a bad row is reported as
``FILE:LINE: column: reason`` and skipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import IO

from engine.errors import CrosswalkError

csv.field_size_limit(1 << 20)


class CsvError(CrosswalkError, ValueError):
    """The file cannot be read as the expected CSV at all (no header, a required column missing)."""


class RowError(CrosswalkError, ValueError):
    """One row is not valid; the message names the column and the reason."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"{column}: {reason}" if column else reason)
        self.column = column


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that was skipped, and why."""

    line: int
    reason: str

    def describe(self, path: Path) -> str:
        return f"{path}:{self.line}: {self.reason}"


class CsvRows:
    """The rows of a CSV file as ``(line, {column: value})``, values stripped of spaces."""

    def __init__(
        self,
        path: Path,
        *,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        encoding: str = "utf-8",
    ) -> None:
        self.path = path
        utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        self.encoding = "utf-8-sig" if utf8 else encoding
        self._raw: IO[bytes] = path.open("rb")
        # Undecodable bytes become surrogates so that one bad row is reported, not the file.
        self._text = io.TextIOWrapper(
            self._raw, encoding=self.encoding, errors="surrogateescape", newline=""
        )
        sample = self._text.read(64 * 1024)
        self._text.seek(0)
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
                sample.split("\n", 1)[0], delimiters=",;\t|"
            )
        except csv.Error:
            dialect = csv.excel
        self._reader = csv.reader(self._text, dialect)
        try:
            header = next(self._reader)
        except StopIteration:
            self.close()
            raise CsvError(f"{path}: the file is empty; a header line is required") from None
        except csv.Error as error:
            self.close()
            raise CsvError(f"{path}:1: cannot read the header: {error}") from None
        names = [name.strip().lower() for name in header]
        missing = [name for name in required if name not in names]
        if missing:
            self.close()
            raise CsvError(
                f"{path}:1: the header lacks the required column(s) {', '.join(missing)}"
                f" (found: {', '.join(n for n in names if n) or 'nothing'})"
            )
        known = set(required) | set(optional)
        self.unknown = [name for name in names if name and name not in known]
        self._columns = [(index, name) for index, name in enumerate(names) if name in known]
        self._width = len(names)

    @property
    def bytes_read(self) -> int:
        """How far into the file reading got (for progress bars)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, str] | RowProblem]]:
        """Each data row: ``(line, values)``, or ``(line, RowProblem)`` for an unreadable one."""
        width = self._width
        reader = self._reader
        names = [name for _, name in self._columns]
        positions = [index for index, _ in self._columns]
        pick = itemgetter(*positions) if len(positions) > 1 else lambda f: (f[positions[0]],)
        padding = [""] * width
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                line = reader.line_num
                yield line, RowProblem(line, f"cannot read the row: {error}")
                continue
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            try:
                "".join(fields).encode("utf-8")
            except UnicodeEncodeError:
                yield line, RowProblem(line, f"the row is not valid {self.encoding} text")
                continue
            if len(fields) > width and any(field.strip() for field in fields[width:]):
                yield (
                    line,
                    RowProblem(line, f"{len(fields)} values for {width} columns in the header"),
                )
                continue
            if len(fields) < width:
                fields = fields + padding[len(fields) :]
            yield line, dict(zip(names, map(str.strip, pick(fields)), strict=True))

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
