"""Reading YAML with positions, and the problems found in it (file:line:column, value, hint)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.errors import CrosswalkError


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in a configuration file (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @classmethod
    def of(cls, node: yaml.Node, file: str) -> Mark:
        return cls(file, node.start_mark.line + 1, node.start_mark.column + 1)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a configuration file."""

    mark: Mark | None
    message: str
    value: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.mark}: {self.message}" if self.mark else self.message
        if self.value is not None:
            text += f" (value: {self.value!r})"
        if self.hint:
            text += f"; hint: {self.hint}"
        return text


class ConfigError(CrosswalkError):
    """The configuration has problems; every one found is listed."""

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None) -> None:
        self.problems = problems
        self.warnings = warnings or []
        """Found along with the problems: what is allowed but almost surely a mistake."""
        super().__init__("\n".join(str(p) for p in problems))


_VARIABLE = re.compile(r"\$(\$)|\$\{file:([^}]+)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Replace ``${VAR}`` and ``${VAR:-default}``, and ``${file:PATH}`` by the file's content
    (a secret kept out of the configuration: a password file, one line; its trailing newline
    dropped); ``$$`` is a literal ``$``.

    Returns the text and what could not be replaced: unset variables without a default, and
    ``file:PATH`` for a file that cannot be read.

    >>> interpolate("${NOPE_X:-2575}", {}), interpolate("${HOST}:1", {"HOST": "pacs"})
    (('2575', []), ('pacs:1', []))
    """
    env = os.environ if environ is None else environ
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        if match.group(2):
            secret = Path(match.group(2).strip()).expanduser()
            try:
                return secret.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError):
                missing.append(f"file:{secret}")
                return ""
        name, default = match.group(3), match.group(4)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                missing.append(name)
                return ""
            return default
        return value

    if "$" not in text:
        return text, missing
    return _VARIABLE.sub(replace, text), missing


def compose_file(path: Path) -> yaml.Node | None:
    """Parse one YAML file into a node tree that keeps positions."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError([Problem(Mark(name, 1, 1), f"not UTF-8 text: {error.reason}")]) from None
    except OSError as error:
        raise ConfigError([Problem(None, f"{name}: cannot read: {error.strerror}")]) from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Mark(name, mark.line + 1, mark.column + 1) if mark else None
        hint = None
        if "got '['" in str(error.problem) or "got ']'" in str(error.problem):
            hint = "inside { } or [ ], quote a field path that has [ ]: 'PID-3[2].1'"
        raise ConfigError(
            [Problem(where, f"YAML syntax error: {error.problem}", hint=hint)]
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError([Problem(Mark(name, 1, 1), f"YAML error: {error}")]) from None
