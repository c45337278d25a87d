"""Crosswalk tables: CSV files in ``mappings/`` that map a value in one column to another.

A table has a header row; a step names the key column and the value column. Cells are trimmed.
Problems (no header, a short row, a key listed twice with different values) are reported with
the file and line.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import CrosswalkError


class MappingError(CrosswalkError, ValueError):
    """A mapping table cannot be used; the text names the file (and line) and the problem."""


@dataclass
class Mapping:
    """One CSV table: its columns and rows, with key indexes built on first use."""

    name: str
    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]
    """(line number, row) pairs."""
    _indexes: dict[tuple[str, str, bool], dict[str, str]] = field(default_factory=dict)

    def require(self, *columns: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise MappingError(
                f"{self.path}: no column {', '.join(repr(c) for c in missing)};"
                f" the columns are {', '.join(self.columns)}"
            )

    def index(self, key: str, value: str, ignore_case: bool = False) -> dict[str, str]:
        """key → value for every row; a key mapped twice to different values is an error."""
        cached = self._indexes.get((key, value, ignore_case))
        if cached is not None:
            return cached
        self.require(key, value)
        mapping: dict[str, str] = {}
        lines: dict[str, int] = {}
        for line, row in self.rows:
            k = row[key].upper() if ignore_case else row[key]
            if k in mapping and mapping[k] != row[value]:
                raise MappingError(
                    f"{self.path}:{line}: {key} {row[key]!r} maps to {row[value]!r}"
                    f" here and to {mapping[k]!r} at line {lines[k]}"
                )
            mapping[k] = row[value]
            lines.setdefault(k, line)
        self._indexes[(key, value, ignore_case)] = mapping
        return mapping

    def lookup(self, key: str, value: str, wanted: str, ignore_case: bool = False) -> str | None:
        mapping = self.index(key, value, ignore_case)
        return mapping.get(wanted.upper() if ignore_case else wanted)


def load_table(path: Path) -> Mapping:
    """Read a CSV table (UTF-8, a byte-order mark allowed, ``#`` lines are comments)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MappingError(f"{path}: no such mapping file") from None
    except UnicodeDecodeError as error:
        raise MappingError(f"{path}: not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise MappingError(f"{path}: cannot read: {error.strerror}") from None
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise MappingError(f"{path}: empty; a mapping table needs a header row")
    reader = csv.reader(io.StringIO("\n".join(line for _, line in lines)))
    parsed = list(reader)
    header = [cell.strip() for cell in parsed[0]]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise MappingError(
            f"{path}:{lines[0][0]}: the header must name every column once: {header}"
        )
    rows: list[tuple[int, dict[str, str]]] = []
    for (number, _), cells in zip(lines[1:], parsed[1:], strict=True):
        if len(cells) != len(header):
            raise MappingError(
                f"{path}:{number}: {len(cells)} cells where the header has {len(header)}"
            )
        rows.append((number, {h: c.strip() for h, c in zip(header, cells, strict=True)}))
    return Mapping(path.stem, path, header, rows)


_TABLE_NAME = re.compile(r"[\w-](?:[\w.-]*[\w-])?")
"""A plain file name: letters, digits, ``_``, ``-``, and ``.`` inside (never first or last)."""


def _shown(name: str) -> str:
    """A table name as given, for an error (it may come from a message: shortened)."""
    return repr(name if len(name) <= 60 else name[:60] + "…")


class Mappings:
    """The tables of a mappings folder, loaded on first use.

    A table is named by its file name (``procedure_codes``, or ``procedure_codes.csv``) and is a
    CSV file directly in the folder: a name with a path (``/etc/x``, ``../x``, ``sub/x``), a
    leading dot, or a file that is a link to somewhere outside the folder is a
    :class:`MappingError`, whoever gives the name (a step, a template's ``lookup()``, a value read
    from a message), so nothing but the mapping tables can be read.
    """

    def __init__(self, folder: Path, *, missing: str = "") -> None:
        self.folder = folder
        self.missing = missing or f"no mappings folder {folder}"
        """What a table says when the folder does not exist: where it was looked for."""
        self._loaded: dict[str, Mapping] = {}

    def path_of(self, name: str) -> Path:
        """The file of table ``name``, directly in the folder; else :class:`MappingError`."""
        stem = name[: -len(".csv")] if name.endswith(".csv") else name
        if not _TABLE_NAME.fullmatch(stem):
            raise MappingError(
                f"table {_shown(name)}: not a table name; a table is named by its file in the"
                " mappings folder (letters, digits, _, - and . inside, optionally .csv), with"
                " no path"
            )
        path = self.folder / f"{stem}.csv"
        try:
            folder = self.folder.resolve()
            resolved = path.resolve()
        except (OSError, RuntimeError):  # a loop of links
            raise MappingError(f"table {_shown(name)}: its file is a loop of links") from None
        if resolved.parent != folder:
            raise MappingError(
                f"table {_shown(name)}: its file is a link to outside the mappings folder;"
                " a table must lie in the folder itself"
            )
        return path

    def get(self, name: str) -> Mapping:
        table = self._loaded.get(name)
        if table is None:
            path = self.path_of(name)
            if not self.folder.is_dir():
                raise MappingError(f"table {_shown(name)}: {self.missing}")
            table = load_table(path)
            self._loaded[name] = table
        return table

    def files(self) -> list[Path]:
        """The files loaded so far (for the hot-reload watcher)."""
        return [t.path for t in self._loaded.values()]
