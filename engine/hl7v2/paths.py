"""Segments and field positions of a message as text, in HL7's own notation (``PID-3[2].1``)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from engine.hl7v2.header import Delimiters, read_delimiters, strip_preamble

_SEGMENT_BREAK = re.compile(r"\r\n|\r|\n")


def split_segments(text: str) -> list[str]:
    """Segments of a message, whatever its segment ends (CR, LF, CRLF); empty ones dropped."""
    return [segment for segment in _SEGMENT_BREAK.split(text) if segment.strip()]


def delimiters_of(text: str) -> Delimiters:
    """The delimiters a message's MSH declares (raises HeaderError when it has none)."""
    return read_delimiters(strip_preamble(text.encode("latin-1", "replace")))


def segment_fields(segment: str, d: Delimiters) -> list[str]:
    """Fields of one segment indexed by HL7 position: ``fields[n]`` is field n, [0] the id."""
    parts = segment.split(d.field)
    if parts[0] == "MSH":
        return ["MSH", d.field, *parts[1:]]
    return parts


def flatten(text: str) -> Iterator[tuple[str, str, str]]:
    """Every valued leaf of a message as (segment label, path, value), in message order.

    Repeated segments and repetitions carry an index: ``OBX[2]-5``, ``PID-3[2].1``.

    >>> list(flatten("MSH|^~\\\\&|RIS\\rPID|||123^^^H~456^^^S"))[-2:]
    [('PID', 'PID-3[1].1', '123'), ('PID', 'PID-3[1].4', 'H')]
    """
    d = delimiters_of(text)
    segments = split_segments(text.lstrip("\ufeff\r\n "))
    totals = Counter(s[:3] for s in segments)
    seen: Counter[str] = Counter()
    for segment in segments:
        name = segment[:3]
        seen[name] += 1
        label = f"{name}[{seen[name]}]" if totals[name] > 1 else name
        fields = segment_fields(segment, d)
        for position, value in enumerate(fields[1:], start=1):
            if not value:
                continue
            if name == "MSH" and position <= 2:
                yield label, f"{label}-{position}", value
                continue
            yield from _leaves(label, f"{label}-{position}", value, d)


def _leaves(label: str, path: str, value: str, d: Delimiters) -> Iterator[tuple[str, str, str]]:
    repetitions = value.split(d.repetition)
    for r, repetition in enumerate(repetitions, start=1):
        if not repetition:
            continue
        rpath = f"{path}[{r}]" if len(repetitions) > 1 else path
        components = repetition.split(d.component)
        if len(components) == 1 and d.subcomponent not in repetition:
            yield label, rpath, repetition
            continue
        for c, component in enumerate(components, start=1):
            if not component:
                continue
            subcomponents = component.split(d.subcomponent)
            if len(subcomponents) == 1:
                yield label, f"{rpath}.{c}", component
                continue
            for s, sub in enumerate(subcomponents, start=1):
                if sub:
                    yield label, f"{rpath}.{c}.{s}", sub
