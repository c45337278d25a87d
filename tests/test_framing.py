"""MLLP framing: frames, tolerated sender quirks, garbage, resynchronisation, size limits."""

from __future__ import annotations

import pytest

from engine.mllp.framing import (
    OVERSIZE_HEAD,
    Frame,
    FrameDecoder,
    Garbage,
    OversizeFrame,
    encode_frame,
)

MSG = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1\r"


def decode(*chunks: bytes, max_size: int = 1 << 20) -> list[object]:
    decoder = FrameDecoder(max_size)
    events: list[object] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"\x0b" + MSG + b"\x1c\r", [Frame(MSG)]),
        (b"\x0b" + MSG + b"\x1c", [Frame(MSG)]),  # final CR missing
        (b"\x0b" + MSG + b"\x1c\r\n", [Frame(MSG)]),  # LF after the CR
        (b"\x0b" + MSG + b"\x1c\n", [Frame(MSG)]),  # LF instead of CR
        (b"\r\n\x0b" + MSG + b"\x1c\r", [Frame(MSG)]),  # blank lines before a frame
        (b"\x0b" + MSG + b"\x1c\x0b" + MSG + b"\x1c\r", [Frame(MSG), Frame(MSG)]),
    ],
    ids=["standard", "no-final-cr", "crlf-after", "lf-after", "leading-newlines", "back-to-back"],
)
def test_frames_are_found_whatever_the_sender_puts_after_fs(
    stream: bytes, expected: list[object]
) -> None:
    """A frame ends at FS; CR, LF or nothing after it are all accepted."""
    assert decode(stream) == expected


def test_byte_by_byte_delivery_yields_the_same_frames() -> None:
    """Frames split across reads at every byte still decode whole."""
    stream = encode_frame(MSG) * 3
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == [Frame(MSG)] * 3


def test_garbage_before_a_frame_is_reported_and_skipped() -> None:
    """Bytes outside a frame are counted, and the next VT starts a frame."""
    assert decode(b"hello" + encode_frame(MSG)) == [Garbage(5), Frame(MSG)]


def test_a_new_vt_inside_a_frame_abandons_the_unfinished_one() -> None:
    """A frame cut short by a new VT is garbage; the new frame decodes (resync)."""
    events = decode(b"\x0bMSH|partial" + encode_frame(MSG))
    assert events == [Garbage(len(b"\x0bMSH|partial"), truncated_frame=True), Frame(MSG)]


def test_oversize_frame_keeps_its_head_and_size_and_the_next_frame_decodes() -> None:
    """Over the limit: the first bytes and the true size are reported, then framing goes on."""
    big = b"MSH|" + b"x" * 5000
    events = decode(
        encode_frame(big)[:100], encode_frame(big)[100:] + encode_frame(MSG), max_size=1024
    )
    assert events == [OversizeFrame(big[:1024], len(big)), Frame(MSG)]


def test_oversize_frame_arriving_at_once() -> None:
    big = b"MSH|" + b"y" * 3000
    assert decode(encode_frame(big), max_size=1024) == [OversizeFrame(big[:1024], len(big))]


def test_of_a_huge_frame_only_the_first_bytes_are_kept() -> None:
    """A frame far over a large limit keeps OVERSIZE_HEAD bytes, not the whole limit."""
    big = b"MSH|" + b"z" * (3 * OVERSIZE_HEAD)
    events = decode(encode_frame(big), max_size=2 * OVERSIZE_HEAD)
    assert events == [OversizeFrame(big[:OVERSIZE_HEAD], len(big))]


def test_in_frame_tracks_an_unfinished_message() -> None:
    """The decoder knows when the peer owes the rest of a message (for the read timeout)."""
    decoder = FrameDecoder()
    decoder.feed(b"\x0bMSH|")
    assert decoder.in_frame
    decoder.feed(b"rest\x1c\r")
    assert not decoder.in_frame
