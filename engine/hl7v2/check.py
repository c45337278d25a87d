"""The checks a message passes before the engine accepts it: MSH, character set, segment ends.

These run on every received frame, so they look at bytes and the MSH segment only; the body
is decoded once to prove the character set is right, and parsed later by routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.hl7v2.charset import DEFAULT_CHARSET, codec_for, supported_charsets
from engine.hl7v2.errors import ErrorCode, Location, Problem
from engine.hl7v2.header import (
    Header,
    HeaderError,
    locate_offset,
    parse_header,
    read_delimiters,
    segment_end,
    strip_preamble,
)


@dataclass(frozen=True, slots=True)
class Examination:
    """What the checks found: the header when readable, the codec, and the first problem."""

    header: Header | None
    charset: str
    codec: str | None
    problem: Problem | None
    header_codec: str = "latin-1"
    """The codec the header text was decoded with, and the ACK should be encoded with (the
    declared one once the whole message decoded with it, else latin-1: byte for byte)."""


def examine(
    payload: bytes, *, default_charset: str = DEFAULT_CHARSET, strict_segments: bool = False
) -> Examination:
    """Check one received message; never raises on bad input."""
    body = strip_preamble(payload)
    try:
        delimiters = read_delimiters(body)
    except HeaderError as error:
        return Examination(None, default_charset, codec_for(default_charset), error.problem)
    msh = body[: segment_end(body)]
    header = parse_header(msh.decode("latin-1"), delimiters)
    charset = header.charset or default_charset

    nul = msh.find(b"\x00")
    if nul >= 0:
        # No store can keep NUL in the header columns (PostgreSQL refuses it in text): the
        # message is refused alike on every store, its bytes kept as received.
        where = locate_offset(body, nul, delimiters.field.encode("ascii"))
        problem = Problem(
            ErrorCode.DATA_TYPE,
            "the MSH segment holds a NUL byte (0x00)",
            Location("MSH", field=where.field),
            reject=True,
        )
        return Examination(header, charset, codec_for(charset), problem)

    if strict_segments and b"\n" in body:
        end = body.index(b"\n")
        if body[end - 1 : end] == b"\r":
            end -= 1
        where = locate_offset(body, end, delimiters.field.encode("ascii"))
        text = "a segment ends with LF; this listener is strict and accepts only CR"
        problem = Problem(
            ErrorCode.SEGMENT_SEQUENCE,
            text,
            Location(where.segment, where.sequence),
            reject=True,
        )
        return Examination(header, charset, codec_for(charset), problem)

    codec = codec_for(charset)
    if codec is None:
        problem = Problem(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            f"character set {charset!r} is not supported; use one of "
            + ", ".join(supported_charsets()),
            Location("MSH", field=18),
            reject=True,
        )
        return Examination(header, charset, None, problem)
    try:
        body.decode(codec)
    except UnicodeDecodeError as error:
        where = locate_offset(body, error.start, delimiters.field.encode("ascii"))
        bad = body[error.start : error.start + 1].hex().upper()
        problem = Problem(
            ErrorCode.DATA_TYPE,
            f"byte 0x{bad} cannot be decoded as {charset}"
            + ("" if header.charset else " (MSH-18 is empty: the listener's default)"),
            where,
        )
        return Examination(header, charset, codec, problem)
    if not msh.isascii():
        header = parse_header(msh.decode(codec), delimiters)

    for position, name in ((9, "message type"), (10, "message control id")):
        if not header[position].strip():
            problem = Problem(
                ErrorCode.REQUIRED_FIELD_MISSING,
                f"MSH-{position} ({name}) is empty",
                Location("MSH", field=position),
                reject=True,
            )
            return Examination(header, charset, codec, problem, codec)
    return Examination(header, charset, codec, None, codec)
