"""Reading HL7 messages from files: one or many per file, blank lines or MSH between them.

Files on disk end segments with LF or CRLF; the messages returned end segments with CR, as they
go on the wire. Batch envelopes (FHS, BHS, BTS, FTS) are unwrapped into their messages. Comment
lines (``#``, ``//``, ``/* … */``) between messages are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.hl7v2.header import BOM

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_SEGMENT_ID = re.compile(rb"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True, slots=True)
class FileMessage:
    """One message read from a file, with the line it starts on."""

    payload: bytes
    line: int


@dataclass(slots=True)
class MessageFile:
    """The messages of one file and the lines that could not be placed in any message."""

    path: str
    messages: list[FileMessage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def split_messages(data: bytes, path: str = "<input>") -> MessageFile:
    """Split the bytes of a message file into messages."""
    result = MessageFile(path)
    if data.startswith(BOM):
        data = data[len(BOM) :]
    current: list[bytes] = []
    start_line = 0
    in_comment = False

    def flush() -> None:
        if current:
            result.messages.append(FileMessage(b"\r".join(current) + b"\r", start_line))
            current.clear()

    for number, line in enumerate(_LINE_BREAK.split(data), start=1):
        stripped = line.strip()
        if in_comment:
            in_comment = b"*/" not in stripped
            continue
        if not stripped:
            flush()
            continue
        if line.startswith(b"MSH") and len(line) > 3 and not line[3:4].isalnum():
            flush()
            current.append(line)
            start_line = number
            continue
        if line[:3] in _ENVELOPE and len(line) > 3 and not line[3:4].isalnum():
            flush()
            continue
        if stripped.startswith(b"/*"):
            in_comment = b"*/" not in stripped[2:]
            continue
        if stripped.startswith((b"#", b"//")):
            continue
        if current:
            current.append(line)
            continue
        what = "segment" if _SEGMENT_ID.match(line) else "text"
        result.problems.append(f"{path}:{number}: {what} outside any message (expected MSH first)")
    flush()
    return result


def read_message_file(path: str | Path) -> MessageFile:
    """Read and split one file; an unreadable file is reported as a problem."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return MessageFile(name, problems=[f"{name}: cannot read: {error.strerror or error}"])
    result = split_messages(data, name)
    if not result.messages and not result.problems:
        result.problems.append(f"{name}: no HL7 message found (a message starts with MSH)")
    return result
