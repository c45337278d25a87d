"""Reading CSV exports row by row, for the MPI and study imports.

A header is required; its names are matched without regard to case or surrounding spaces.
Required columns must be present, optional ones may be missing, unknown ones are reported and
ignored. Each row comes with its line number, so a bad row is reported as
``FILE:LINE: column: reason`` and skipped.

A row is one line. A quoted value that does not close on its line is an error of that line (it
never swallows the lines after it), as are a closing quote followed by more text and a row
whose number of values is not the header's: a row is imported only in the header's shape.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import IO, Final

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


class _OpenQuote(Exception):
    """The csv reader asked for a second line for one row: a quoted value is still open."""


class _Lines:
    """A file's lines, one row's worth at a time.

    The csv reader asks for the next line while a quoted value is open; :meth:`__next__` then
    raises :class:`_OpenQuote` instead, without reading the line, so the row is reported and the
    next line starts a row of its own (the reader starts afresh on each row).
    """

    __slots__ = ("_next", "last", "taken")

    def __init__(self, lines: IO[str]) -> None:
        self._next = iter(lines).__next__
        self.taken = False
        self.last = ""
        """The line read last (to find the column of a quoting error)."""

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.taken:
            raise _OpenQuote
        self.taken = True
        self.last = self._next()
        return self.last


QUOTE_HINT: Final = (
    "a value may not run over several lines, and a quote inside a quoted value is written"
    ' twice ("")'
)


def quote_problem(line: str, delimiter: str = ",", quote: str = '"') -> tuple[int, str]:
    """The 1-based column of the first quoting error on ``line`` and what it is (``(0, "")``
    when there is none)."""
    column, index, end = 1, 0, len(line.rstrip("\r\n"))
    at_start, quoted = True, False
    while index < end:
        char = line[index]
        index += 1
        if quoted:
            if char != quote:
                continue
            if index < end and line[index] == quote:
                index += 1  # a doubled quote inside the value
                continue
            quoted = False
            if index < end and line[index] != delimiter:
                return column, "a closing quote is followed by more text"
        elif char == delimiter:
            column, at_start = column + 1, True
        elif char == quote and at_start:
            quoted, at_start = True, False
        else:
            at_start = False
    if quoted:
        return column, "a quoted value is not closed on this line"
    return 0, ""


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
        # Only the delimiter is guessed from the header; quoting is always CSV's own (a value
        # in double quotes, a quote inside it doubled), which a one-line sample cannot show.
        try:
            delimiter = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
        self._lines = _Lines(self._text)
        self._reader = csv.reader(self._lines, csv.excel, delimiter=delimiter, strict=True)
        self._delimiter = delimiter
        try:
            header = next(self._reader)
        except StopIteration:
            self.close()
            raise CsvError(f"{path}: the file is empty; a header line is required") from None
        except (csv.Error, _OpenQuote) as error:
            self.close()
            reason = "a quoted name is not closed" if isinstance(error, _OpenQuote) else error
            raise CsvError(f"{path}:1: cannot read the header: {reason}") from None
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
        self._names = names

    @property
    def bytes_read(self) -> int:
        """How far into the file reading got (for progress bars)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, str] | RowProblem]]:
        """Each data row: ``(line, values)``, or ``(line, RowProblem)`` for an unreadable one
        or one whose number of values is not the header's."""
        width = self._width
        reader = self._reader
        lines = self._lines
        names = [name for _, name in self._columns]
        positions = [index for index, _ in self._columns]
        pick = itemgetter(*positions) if len(positions) > 1 else lambda f: (f[positions[0]],)
        line = 1
        while True:
            line += 1
            lines.taken = False
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, _OpenQuote) as error:
                yield line, RowProblem(line, self._unreadable(lines.last, error))
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            try:
                "".join(fields).encode("utf-8")
            except UnicodeEncodeError:
                yield line, RowProblem(line, f"the row is not valid {self.encoding} text")
                continue
            if len(fields) != width:
                yield line, RowProblem(line, self._shape_reason(len(fields)))
                continue
            yield line, dict(zip(names, map(str.strip, pick(fields)), strict=True))

    def _shape_reason(self, count: int) -> str:
        width = self._width
        reason = f"{count} values for {width} columns in the header; the row is not imported"
        if count > width:
            return reason + f" (a value holding {self._delimiter!r} must be in quotes)"
        return reason + " (values are missing, or the row was cut)"

    def _unreadable(self, text: str, error: Exception) -> str:
        """Why the row ``text`` could not be read, naming the column of a quoting error."""
        column, what = quote_problem(text, self._delimiter)
        if not column:
            return f"cannot read the row: {error}"
        name = self._names[column - 1] if column <= len(self._names) else ""
        where = f"column {column}" + (f" ({name})" if name else "")
        return f"{where}: {what}; {QUOTE_HINT}"

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
