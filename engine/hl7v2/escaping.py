"""HL7 escape sequences: every value written into a message goes through :func:`escape`."""

from __future__ import annotations

import re

from engine.hl7v2.header import DEFAULT_DELIMITERS, Delimiters


def escape(value: str, delimiters: Delimiters = DEFAULT_DELIMITERS) -> str:
    r"""Escape delimiters so ``value`` stays one field component.

    >>> escape("A|B^C~D\\E&F")
    'A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F'
    """
    e = delimiters.escape
    table = {
        e: f"{e}E{e}",
        delimiters.field: f"{e}F{e}",
        delimiters.component: f"{e}S{e}",
        delimiters.repetition: f"{e}R{e}",
        delimiters.subcomponent: f"{e}T{e}",
        "\r": f"{e}X0D{e}",
        "\n": f"{e}X0A{e}",
    }
    if delimiters.truncation:
        table[delimiters.truncation] = f"{e}P{e}"
    if not any(ch in value for ch in table):
        return value
    return "".join(table.get(ch, ch) for ch in value)


def unescape(value: str, delimiters: Delimiters = DEFAULT_DELIMITERS) -> str:
    r"""Resolve \F\ \S\ \T\ \R\ \E\ \P\, \Xhh..\ and \.br\; other sequences stay as written.

    >>> unescape(r"M\S\LLER \T\ SONS\.br\X\X41\")
    'M^LLER & SONS\nXA'
    """
    e = delimiters.escape
    if e not in value:
        return value
    simple = {
        "F": delimiters.field,
        "S": delimiters.component,
        "T": delimiters.subcomponent,
        "R": delimiters.repetition,
        "E": e,
        "P": delimiters.truncation,
        ".br": "\n",
    }
    pattern = re.compile(re.escape(e) + r"([^" + re.escape(e) + r"\r\n]*)" + re.escape(e))

    def resolve(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in simple:
            return simple[code]
        if code[:1] == "X" and len(code) > 1 and len(code) % 2 == 1:
            try:
                return bytes.fromhex(code[1:]).decode("latin-1")
            except ValueError:
                return match.group(0)
        return match.group(0)

    return pattern.sub(resolve, value)
