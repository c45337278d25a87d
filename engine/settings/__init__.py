"""Typed settings from YAML: fields that document themselves, bound with every problem's place.

A settings class is a frozen dataclass whose fields are declared with :func:`setting`; the
:class:`Binder` turns YAML nodes into such objects and records each :class:`Problem` with its
file, line and column; a class's ``check()`` returns the :class:`Issue` list of its own values.
This package is at the bottom of the engine: every part declares its own settings with it.
"""

from __future__ import annotations

from typing import NamedTuple

from engine.settings.binding import (
    INVALID,
    Binder,
    ByteSize,
    Duration,
    closest,
    converter,
    setting,
    yaml_key,
)
from engine.settings.source import ConfigError, Mark, Problem, compose_file, interpolate


class Issue(NamedTuple):
    """One thing a settings object's ``check()`` finds wrong with its own values."""

    message: str
    hint: str | None = None
    """What to do about it, when there is something to say."""


__all__ = [
    "INVALID",
    "Binder",
    "ByteSize",
    "ConfigError",
    "Duration",
    "Issue",
    "Mark",
    "Problem",
    "closest",
    "compose_file",
    "converter",
    "interpolate",
    "setting",
    "yaml_key",
]
