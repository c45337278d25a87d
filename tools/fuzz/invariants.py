"""What must hold for any input at the engine's edges; each check raises AssertionError if not.

Shared by the atheris harnesses (``tools/fuzz/fuzz_*.py``: coverage-guided bytes) and the
hypothesis suite (``tests/test_hostile_input.py``: structured hostile messages), so a finding
of either is checked the same way by both.
"""

from __future__ import annotations

from engine.hl7v2.ack import Outcome, ack_codes, build_ack, read_ack, sent_control_id
from engine.hl7v2.check import Examination, examine
from engine.hl7v2.errors import ErrorCode, Problem
from engine.hl7v2.escaping import escape, unescape
from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.header import Delimiters, HeaderError
from engine.hl7v2.message import Message
from engine.mllp.framing import (
    OVERSIZE_HEAD,
    Event,
    Frame,
    FrameDecoder,
    Garbage,
    OversizeFrame,
)

_FRAMING_BYTES = (b"\x0b", b"\x1c")


def decode_in_pieces(data: bytes, cuts: list[int], max_size: int) -> list[Event]:
    """Feed ``data`` to one decoder, split at ``cuts``; check the buffer stays within the limit.

    Returns the events in order. The decoder may hold at most ``max_size`` bytes whatever it
    is fed: an endless frame is counted, not buffered.
    """
    decoder = FrameDecoder(max_size)
    events: list[Event] = []
    start = 0
    for cut in [*sorted(c for c in cuts if 0 < c < len(data)), len(data)]:
        events += decoder.feed(data[start:cut])
        start = cut
        assert decoder.buffered <= max_size, (decoder.buffered, max_size)
    return events


def check_decoder(data: bytes, cuts: list[int], max_size: int) -> list[Event]:
    """Decode ``data`` whole and in pieces: the same frames, in the same order, either way.

    Every frame's payload is free of VT and FS and within the limit; an oversize frame keeps
    exactly its first ``max_size`` bytes (``OVERSIZE_HEAD`` at most) and counts its full size.
    Returns the frames.
    """
    whole = decode_in_pieces(data, [], max_size)
    pieces = decode_in_pieces(data, cuts, max_size)
    frames = [e for e in whole if not isinstance(e, Garbage)]
    assert frames == [e for e in pieces if not isinstance(e, Garbage)], "chunking changed frames"
    for event in frames:
        if isinstance(event, Frame):
            assert len(event.payload) <= max_size
            assert not any(b in event.payload for b in _FRAMING_BYTES)
        elif isinstance(event, OversizeFrame):
            assert len(event.head) == min(max_size, OVERSIZE_HEAD) and max_size < event.size
            assert not any(b in event.head for b in _FRAMING_BYTES)
    # Every frame was delimited by a VT: there are never more frames than VTs.
    assert len(frames) <= data.count(b"\x0b")
    return frames


def check_answers(
    payload: bytes, *, default_charset: str = "UNICODE UTF-8", strict_segments: bool = False
) -> Examination:
    """Examine one frame's payload and build every answer intake could send for it.

    For each outcome (accepted, error, refused, and the store's own failure): building never
    raises; original mode gets exactly one ACK, enhanced mode what table 0155 asks for; every
    ACK is free of VT and FS (it would break the sender's framing), is readable as an ACK with
    the code sent, and its MSA-2 is the frame's MSH-10 (empty when no header could be read).
    """
    assert not any(b in payload for b in _FRAMING_BYTES), "not a frame payload"
    examination = examine(payload, default_charset=default_charset, strict_segments=strict_segments)
    header = examination.header
    if examination.problem is None:
        assert header is not None and examination.codec is not None
        assert header.control_id.strip() and header.message_type.strip()
    outcomes = [Outcome.ERROR, Outcome.REJECTED]
    if examination.problem is None:
        outcomes.append(Outcome.ACCEPTED)
    expected_id = sent_control_id(payload) if header is not None else ""
    store_failure = Problem(ErrorCode.INTERNAL_ERROR, "the message could not be stored")
    for outcome in outcomes:
        codes = ack_codes(header, outcome)
        if header is None or not header.enhanced_mode:
            assert len(codes) == 1, codes
        problem = examination.problem if outcome is not Outcome.ACCEPTED else None
        for code in codes:
            text = build_ack(header, code, "refused", problem or store_failure)
            ack = text.encode(examination.header_codec, "replace")
            assert not any(b in ack for b in _FRAMING_BYTES), ack
            reply = read_ack(ack)
            assert reply.code == code, (reply, code)
            assert reply.control_id == expected_id, (reply.control_id, expected_id)
    return examination


def check_read_ack(payload: bytes) -> None:
    """Any answer a PACS sends is read without an exception; only AA/CA count as success."""
    reply = read_ack(payload)
    assert reply.positive == (reply.code in ("AA", "CA"))


def check_message(text: str) -> Message | None:
    """Parse ``text`` as a message (a :class:`HeaderError` is the only refusal allowed).

    Writing it out and parsing again gives the same text; untouched segments are written back
    as received; reading every field of every segment never raises.
    """
    try:
        message = Message.parse(text)
    except HeaderError:
        return None
    written = message.to_text()
    again = Message.parse(written)
    assert again.to_text() == written
    assert [str(s) for s in again.segments] == [str(s) for s in message.segments]
    message.type_parts()
    for segment in message.segments[:50]:
        if len(segment.id) == 3 and segment.id.isalnum() and segment.id.isupper():
            for position in range(1, min(len(segment.fields), 40)):
                message.values(FieldPath(segment.id, position, component=1, subcomponent=1))
    return message


def check_write_read(message: Message, path: FieldPath, value: str) -> None:
    """A value written at ``path`` reads back unchanged, before and after a round trip."""
    message.set(path, value)
    assert message.value(path) == value, (message.value(path), value)
    again = Message.parse(message.to_text())
    assert again.value(path) == value, (again.value(path), value)


def check_escaping(value: str, delimiters: Delimiters) -> None:
    """Escaping is undone by unescaping; unescaping any text never raises."""
    escaped = escape(value, delimiters)
    structure = {
        delimiters.field,
        delimiters.component,
        delimiters.repetition,
        delimiters.subcomponent,
        "\r",
        "\n",
    }
    assert not structure & set(escaped), escaped
    assert unescape(escaped, delimiters) == value
    unescape(value, delimiters)
