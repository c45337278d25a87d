"""The root of every error Crosswalk raises on purpose.

Each part's errors keep the built-in base that says what kind of failure they are (a
``ValueError`` for bad input, a ``ConnectionError`` for a peer, a ``RuntimeError`` for the
store), and all of them are also a :class:`CrosswalkError`, so a caller (a command, a console)
can tell Crosswalk's own, explained failures from bugs with one ``except``.
"""

from __future__ import annotations

__all__ = ["CrosswalkError"]


class CrosswalkError(Exception):
    """An error Crosswalk raises on purpose; its text says what went wrong and what to do."""
