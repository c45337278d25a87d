"""Reading the MSH segment straight from the received bytes, without parsing the message.

The listener acknowledges from the header alone; the rest of the message is parsed later, when a
route needs it. Every function here raises :class:`HeaderError` carrying an HL7 :class:`Problem`
that names the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import CrosswalkError
from engine.hl7v2.errors import ErrorCode, Location, Problem

BOM = b"\xef\xbb\xbf"
_PREAMBLE = b"\r\n\t "
_SEGMENT_ENDS = b"\r\n"


class HeaderError(CrosswalkError, ValueError):
    """The MSH segment cannot be read; ``problem`` says why and where."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The field separator (MSH-1) and encoding characters (MSH-2) of one message."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it is written in this message."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_DELIMITERS = Delimiters()


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of an MSH segment; ``header[n]`` is MSH-n (1-based, '' when absent)."""

    delimiters: Delimiters
    fields: tuple[str, ...]

    def __getitem__(self, position: int) -> str:
        if position < 1 or position >= len(self.fields):
            return ""
        return self.fields[position]

    def component(self, position: int, component: int) -> str:
        """MSH-position.component of the first repetition, '' when absent."""
        value = self[position].split(self.delimiters.repetition, 1)[0]
        parts = value.split(self.delimiters.component)
        return parts[component - 1] if component <= len(parts) else ""

    @property
    def sending_application(self) -> str:
        return self[3]

    @property
    def sending_facility(self) -> str:
        return self[4]

    @property
    def receiving_application(self) -> str:
        return self[5]

    @property
    def receiving_facility(self) -> str:
        return self[6]

    @property
    def message_datetime(self) -> str:
        return self[7]

    @property
    def message_type(self) -> str:
        """MSH-9 as sent, e.g. ``ADT^A01^ADT_A01``."""
        return self[9]

    @property
    def message_code(self) -> str:
        return self.component(9, 1)

    @property
    def trigger_event(self) -> str:
        return self.component(9, 2)

    @property
    def message_structure(self) -> str:
        return self.component(9, 3)

    @property
    def control_id(self) -> str:
        return self[10]

    @property
    def processing_id(self) -> str:
        return self[11]

    @property
    def version(self) -> str:
        """MSH-12.1, e.g. ``2.5.1``."""
        return self.component(12, 1)

    @property
    def accept_ack_type(self) -> str:
        return self[15].strip().upper()

    @property
    def application_ack_type(self) -> str:
        return self[16].strip().upper()

    @property
    def enhanced_mode(self) -> bool:
        """True when MSH-15 or MSH-16 is valued (HL7 enhanced acknowledgement mode)."""
        return bool(self.accept_ack_type or self.application_ack_type)

    @property
    def charset(self) -> str:
        """MSH-18's first repetition: the character set of the whole message, '' if absent."""
        return self[18].split(self.delimiters.repetition, 1)[0].strip()


def version_tuple(version: str) -> tuple[int, ...]:
    """``'2.5.1'`` -> ``(2, 5, 1)``; unreadable parts stop the tuple.

    >>> version_tuple("2.3.1"), version_tuple("2.5"), version_tuple("")
    ((2, 3, 1), (2, 5), ())
    """
    numbers: list[int] = []
    for part in version.strip().split("."):
        if not (part.isascii() and part.isdigit()):  # '²' is a digit int() refuses
            break
        numbers.append(int(part))
    return tuple(numbers)


def strip_preamble(payload: bytes) -> bytes:
    """Drop a UTF-8 byte-order mark and blank lines in front of MSH."""
    if payload.startswith(BOM):
        payload = payload[len(BOM) :]
    if payload[:1] in (b"\r", b"\n", b"\t", b" "):
        payload = payload.lstrip(_PREAMBLE)
    return payload


def segment_end(payload: bytes, start: int = 0) -> int:
    """Offset of the CR or LF that ends the segment starting at ``start`` (len if none)."""
    cr = payload.find(b"\r", start)
    lf = payload.find(b"\n", start)
    if cr < 0:
        return len(payload) if lf < 0 else lf
    return cr if lf < 0 or cr < lf else lf


_DECLARED: dict[bytes, Delimiters] = {}
"""Delimiters already read, by the bytes that declare them (``MSH|^~\\&|``: MSH, MSH-1, MSH-2
and the character that ends it): a feed's messages all begin alike, and the engine reads each
message's delimiters several times (intake, the routes, the MPI, the destination's ACK)."""
_DECLARED_MAX = 64


def read_delimiters(payload: bytes) -> Delimiters:
    """The delimiters declared by MSH-1 and MSH-2 of ``payload`` (preamble already stripped)."""
    # A declaration is 9 bytes with 4 encoding characters, 10 with 5 (v2.7).
    known = _DECLARED.get(payload[:9]) or _DECLARED.get(payload[:10])
    if known is not None:
        return known
    delimiters, end = _declared(payload)
    if end < min(len(payload), 10) and len(_DECLARED) < _DECLARED_MAX:
        _DECLARED[payload[: end + 1]] = delimiters
    return delimiters


def _declared(payload: bytes) -> tuple[Delimiters, int]:
    """The delimiters, and the index of the character that ends MSH-2 (a separator or a line
    end): everything they depend on lies before it."""
    if not payload.startswith(b"MSH"):
        found = payload[:3]
        named = f"'{found.decode('ascii')}'" if found.isalnum() and found.isascii() else None
        text = "the message does not begin with an MSH segment" + (
            f" (it begins with {named})" if named else ""
        )
        if found in (b"FHS", b"BHS"):
            text += "; send the messages of an HL7 batch one per MLLP frame"
        raise HeaderError(Problem(ErrorCode.SEGMENT_SEQUENCE, text, Location("MSH"), reject=True))
    if len(payload) < 8:
        raise HeaderError(
            Problem(
                ErrorCode.REQUIRED_FIELD_MISSING,
                "the MSH segment ends before its encoding characters (MSH-2)",
                Location("MSH", field=2),
                reject=True,
            )
        )
    separator = payload[3:4]
    if separator.isalnum() or separator in (b"\r", b"\n", b" ", b"\x00") or not separator.isascii():
        raise HeaderError(
            Problem(
                ErrorCode.DATA_TYPE,
                f"MSH-1 field separator {separator!r} is not a usable delimiter",
                Location("MSH", field=1),
                reject=True,
            )
        )
    end = payload.find(separator, 4)
    line_end = segment_end(payload, 4)
    if end < 0 or end > line_end:
        end = line_end
    encoding = payload[4:end]
    reason = _encoding_problem(encoding, separator)
    if reason:
        raise HeaderError(
            Problem(
                ErrorCode.DATA_TYPE,
                f"MSH-2 encoding characters {encoding.decode('latin-1')!r} {reason}",
                Location("MSH", field=2),
                reject=True,
            )
        )
    chars = encoding.decode("ascii")
    return (
        Delimiters(
            field=separator.decode("ascii"),
            component=chars[0],
            repetition=chars[1],
            escape=chars[2],
            subcomponent=chars[3],
            truncation=chars[4] if len(chars) == 5 else "",
        ),
        end,
    )


def _encoding_problem(encoding: bytes, separator: bytes) -> str:
    if len(encoding) not in (4, 5):
        return f"must be 4 characters (5 from v2.7), found {len(encoding)}"
    if not encoding.isascii():
        return "must be ASCII"
    if b"\x00" in encoding:
        return "must not hold a NUL byte (0x00)"
    if len(set(encoding)) != len(encoding) or separator[0] in encoding:
        return "must all differ from each other and from MSH-1"
    if any(chr(c).isalnum() or chr(c).isspace() for c in encoding):
        return "must not be letters, digits or spaces"
    return ""


def parse_header(segment: str, delimiters: Delimiters) -> Header:
    """Split an MSH segment (decoded text) into a :class:`Header`."""
    parts = segment.split(delimiters.field)
    # parts[0] is "MSH" and parts[1] is MSH-2; MSH-1 is the separator itself.
    fields = ("MSH", delimiters.field, *parts[1:])
    return Header(delimiters, fields)


def locate_offset(payload: bytes, offset: int, field_separator: bytes) -> Location:
    """The segment and field holding byte ``offset``, for precise error reports."""
    start = max(payload.rfind(b"\r", 0, offset), payload.rfind(b"\n", 0, offset)) + 1
    segment_id = payload[start : start + 3].decode("latin-1")
    sequence = 1
    cursor = 0
    while cursor < start:
        end = segment_end(payload, cursor)
        if end >= start:
            break
        if payload[cursor : cursor + 3].decode("latin-1") == segment_id:
            sequence += 1
        cursor = end + 1
    field = payload.count(field_separator, start, offset)
    if segment_id == "MSH":
        field += 1
    return Location(segment_id, sequence, field or None)
