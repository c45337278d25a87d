"""Tables that fit the terminal without cutting a value in two.

An id, a date, a code or an accession number (a ``WHOLE`` column) is printed whole on one line,
never folded. Names and reasons (``WORDS``) wrap between words only, so a date or an identifier
inside them stays whole too; free text (``TEXT``) may also fold a long word. When the terminal is
too narrow for every column, the less important ones (``drop``: 1 first, then 2 …) are left out
until the rest fit, and the caller says which.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

WHOLE: Literal["whole"] = "whole"
WORDS: Literal["words"] = "words"
TEXT: Literal["text"] = "text"
TEXT_MIN = 12
"""The narrowest a free-text column is made before columns are left out."""

Cell = str | Text


@dataclass(frozen=True)
class Column:
    """One column: its header, how its values may wrap, and how soon it is left out."""

    header: str
    kind: Literal["whole", "words", "text"] = WHOLE
    drop: int = 0
    """0: always shown; otherwise left out on a narrow terminal, 1 first, then 2 …"""
    justify: Literal["left", "right"] = "left"


@dataclass
class Fitted:
    """The table to print, and the headers of the columns left out for want of room."""

    table: Table
    dropped: list[str] = field(default_factory=list)

    def note(self, wider: str = "widen the terminal") -> str:
        """``(columns left out to fit the terminal: flags; widen the terminal)``, or ``""``."""
        if not self.dropped:
            return ""
        return f"(left out to fit the terminal: {', '.join(self.dropped)}; {wider})"


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _widest_line(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _widest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def fit(
    console: Console,
    columns: Sequence[Column],
    rows: Iterable[Sequence[Cell]],
    **options: Any,
) -> Fitted:
    """A table of ``rows`` under ``columns`` as wide as ``console`` allows at most.

    ``options`` go to :class:`rich.table.Table` (``title``, ``show_edge``, ``header_style``…);
    the table always has vertical lines between columns and one space of padding.
    """
    body = [list(row) for row in rows]
    show_edge = options.get("show_edge", True)
    natural, least = [], []
    for index, column in enumerate(columns):
        texts = [_plain(row[index]) for row in body]
        widest = max([_widest_line(column.header), *map(_widest_line, texts)])
        natural.append(widest)
        if column.kind == WHOLE:
            least.append(widest)
        elif column.kind == WORDS:
            least.append(max([_widest_word(column.header), *map(_widest_word, texts)]))
        else:
            least.append(min(widest, max(_widest_word(column.header), TEXT_MIN)))

    def overhead(count: int) -> int:  # padding, lines between columns, edges
        return 3 * count - 1 + (2 if show_edge else 0)

    shown = list(range(len(columns)))
    dropped: list[int] = []
    while sum(least[i] for i in shown) + overhead(len(shown)) > console.width:
        candidates = [i for i in shown if columns[i].drop]
        if not candidates:
            break
        victim = min(candidates, key=lambda i: (columns[i].drop, -i))
        shown.remove(victim)
        dropped.append(victim)

    widths = {i: natural[i] for i in shown}
    excess = sum(widths.values()) + overhead(len(shown)) - console.width
    while excess > 0:
        roomy = [i for i in shown if widths[i] > least[i]]
        if not roomy:
            break
        widest = max(roomy, key=lambda i: (widths[i], widths[i] - least[i]))
        widths[widest] -= 1
        excess -= 1

    table = Table(**options)
    for i in shown:
        column = columns[i]
        whole = column.kind == WHOLE
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=whole,
            overflow="ellipsis" if whole else "fold",
            width=widths[i],
        )
    for row in body:
        table.add_row(*(row[i] for i in shown))
    return Fitted(table, [columns[i].header for i in sorted(dropped)])
