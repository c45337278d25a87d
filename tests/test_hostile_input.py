"""Hostile input, property-based: the framing decoder, the header checks, the message model
and the ACK builder never raise, answer every frame, echo its MSH-10 and stay within the limit.

The invariants live in tools/fuzz/invariants.py, shared with the atheris harnesses; the fuzzer's
findings are the regression tests at the end (each crashed the listener's connection before).
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.hl7v2.ack import read_ack, sent_control_id
from engine.hl7v2.charset import codec_for
from engine.hl7v2.check import examine
from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.header import Delimiters, version_tuple
from engine.hl7v2.message import Message
from engine.mllp.framing import OVERSIZE_HEAD, Frame, OversizeFrame, encode_frame
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import Peer
from tests.support import running_engine, stored_messages
from tools.fuzz.invariants import (
    check_answers,
    check_decoder,
    check_escaping,
    check_message,
    check_read_ack,
    check_write_read,
    decode_in_pieces,
)

BOUNDED = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------

_PUNCTUATION = "|^~\\&#!$%*+:;<=>@`{}"  # none used in the fixed values below
_CHARSETS = [
    "",
    "ASCII",
    "8859/1",
    "8859/5",
    "UNICODE UTF-8",
    "ISO IR87",
    "GB 18030-2000",
    "BIG-5",
    "UTF-16",
    "EBCDIC",
    "8859/1~UNICODE UTF-8",
    "\x00",
]


@st.composite
def delimiter_sets(draw: st.DrawFn) -> Delimiters:
    """Five (or six, with v2.7's truncation character) distinct punctuation characters."""
    chars = draw(st.permutations(_PUNCTUATION))
    truncation = draw(st.booleans())
    return Delimiters(*chars[:5], truncation=chars[5] if truncation else "")


def field_texts(d: Delimiters) -> st.SearchStrategy[str]:
    """Field values with delimiters, escape sequences (valid, invalid, unterminated), NUL and
    non-ASCII letters."""
    e = d.escape
    pieces = st.sampled_from(
        [
            d.component,
            d.repetition,
            d.subcomponent,
            e,
            f"{e}F{e}",
            f"{e}X0D{e}",
            f"{e}XZZ{e}",
            f"{e}X4",
            f"{e}.br{e}",
            f"{e}Q{e}",
            "\x00",
            "Ü",
            "é",
            "Ж",
            "漢",
            "ABC",
            "12",
            " ",
        ]
    )
    return st.lists(pieces, max_size=12).map("".join)


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A message as bytes (and the MSH-10 written, None when junk bytes were inserted, which may
    land inside it), hostile in every way the issue lists."""
    d = draw(delimiter_sets())
    text = field_texts(d)
    control_id = draw(st.text(alphabet="ABCXYZ0123456789-.", max_size=20))
    msh = [
        "MSH" + d.field + d.encoding_characters,
        draw(text),
        draw(text),
        "PACS",
        "RADIOLOGY",
        "20261123101500",
        "",
        d.component.join(draw(st.sampled_from([("ADT", "A01", "ADTA01"), ("ORM", "O01"), ("",)]))),
        control_id,
        draw(st.sampled_from(["P", "T", ""])),
        draw(st.sampled_from(["2.5.1", "2.3", "2.7", "2.²", "", "9.9.9.9", "x"])),
        "",
        "",
        draw(st.sampled_from(["", "AL", "NE", "ER", "SU", "??"])),
        draw(st.sampled_from(["", "AL", "NE", "ER", "SU"])),
        "",
        draw(st.sampled_from(_CHARSETS)).replace("~", d.repetition),
    ]
    segments = [d.field.join(msh[:1] + msh[1:])]
    for _ in range(draw(st.integers(0, 30))):
        fields = draw(st.lists(text, max_size=8))
        segments.append(d.field.join([draw(st.sampled_from(["PID", "OBX", "NTE", "ZZ1", "p"]))]))
        segments[-1] += d.field + d.field.join(fields) if fields else ""
    body = draw(st.sampled_from(["\r", "\n", "\r\n", "\n\r"])).join(segments) + "\r"
    codec = codec_for(draw(st.sampled_from(["utf-8", "latin-1", "iso8859-5", "gb18030"])))
    assert codec is not None
    data = body.encode(codec, "replace")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    spoil = draw(st.lists(st.tuples(st.integers(0, len(data)), st.binary(max_size=3)), max_size=3))
    for at, junk in spoil:
        data = data[:at] + junk + data[at:]
    frame_safe = data.replace(b"\x0b", b"").replace(b"\x1c", b"")
    return frame_safe, None if spoil else control_id


# -- the framing decoder ------------------------------------------------------------------------


@BOUNDED
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10), st.integers(1, 300))
def test_random_bytes_in_any_chunks_decode_to_the_same_frames(
    data: bytes, cuts: list[int], max_size: int
) -> None:
    """Random bytes, cut anywhere: no exception, same frames, buffer within the limit."""
    check_decoder(data, cuts, max_size)


@BOUNDED
@given(
    st.lists(st.binary(max_size=400).map(lambda b: b.translate(None, b"\x0b\x1c")), max_size=8),
    st.lists(st.sampled_from([b"", b"\r", b"\n", b"\r\n", b"\x00", b"junk"]), max_size=8),
    st.lists(st.integers(0, 4000), max_size=10),
    st.integers(16, 300),
)
def test_frames_between_noise_come_out_whole_in_order_or_as_oversize(
    payloads: list[bytes], noise: list[bytes], cuts: list[int], max_size: int
) -> None:
    """Every complete frame yields exactly one event, in order, whatever lies between frames."""
    stream = b""
    for i, payload in enumerate(payloads):
        stream += (noise[i] if i < len(noise) else b"") + encode_frame(payload)
    events = check_decoder(stream, cuts, max_size)
    assert len(events) == len(payloads)
    for event, payload in zip(events, payloads, strict=True):
        if len(payload) <= max_size:
            assert event == Frame(payload)
        else:
            assert event == OversizeFrame(payload[:max_size], len(payload))


@BOUNDED
@given(st.binary(min_size=1, max_size=300), st.integers(1, 5))
def test_nested_and_unterminated_frames_lose_only_themselves(partial: bytes, depth: int) -> None:
    """A frame cut by a new VT, however deep, is garbage; the frame after it decodes; a frame
    missing its FS stays pending."""
    partial = partial.translate(None, b"\x0b\x1c")
    stream = (b"\x0b" + partial) * depth + encode_frame(b"MSH|^~\\&|OK") + b"\x0b" + partial
    events = check_decoder(stream, [len(stream) // 2], 1024)
    assert events == [Frame(b"MSH|^~\\&|OK")]


def test_an_endless_frame_is_counted_not_buffered() -> None:
    """20 MB with no FS, in 64 KiB reads, under a 1 MiB limit: the decoder never holds more."""
    chunk = b"\x0bMSH|^~\\&|" + b"x" * (65536 - 10)
    limit = 1 << 20
    stream = chunk + b"y" * (20 * (1 << 20)) + b"\x1c\r"
    events = decode_in_pieces(stream, list(range(65536, len(stream), 65536)), limit)
    assert events == [OversizeFrame(stream[1 : OVERSIZE_HEAD + 1], len(stream) - 3)]


# -- header checks and the ACKs built from them -------------------------------------------------


@BOUNDED
@given(st.binary(max_size=600))
def test_random_bytes_are_examined_and_answered_without_an_exception(data: bytes) -> None:
    """Any bytes: a verdict and an ACK for every outcome, MSA-2 echoing what MSH-10 holds."""
    check_answers(data.translate(None, b"\x0b\x1c"))


@BOUNDED
@given(st.binary(max_size=400))
def test_bytes_after_an_msh_prefix_are_examined_and_answered(tail: bytes) -> None:
    """Bytes behind a plausible MSH start reach the deeper checks (charset, MSH-9, MSH-10)."""
    payload = b"MSH|^~\\&|" + tail.translate(None, b"\x0b\x1c")
    check_answers(payload)
    check_answers(payload, default_charset="8859/1", strict_segments=True)


@BOUNDED
@given(hostile_messages())
def test_hostile_messages_are_answered_with_their_own_control_id(
    message: tuple[bytes, str | None],
) -> None:
    """BOMs, odd delimiters, mixed segment ends, bad escapes, NULs, wrong charsets: each message
    gets its answers, and a readable MSH-10 comes back in MSA-2."""
    payload, control_id = message
    examination = check_answers(payload)
    if examination.problem is None:
        assert examination.header is not None
        if control_id is not None:
            assert examination.header.control_id == control_id


def test_a_huge_message_is_examined_and_answered() -> None:
    """A 200,000-character field and 20,000 segments: examined, answered, parsed."""
    payload = (
        b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|BIG1|P|2.5\rPID|1||"
        + b"^~&" * 70000
        + b"\r"
        + b"OBX|1|TX|||line\r" * 20000
    )
    assert check_answers(payload).problem is None
    message = check_message(payload.decode("latin-1"))
    assert message is not None and len(message.segments) == 20002


# -- the message model --------------------------------------------------------------------------


@BOUNDED
@given(st.text(max_size=600))
def test_any_text_parses_or_is_refused_with_a_header_error(text: str) -> None:
    """Message.parse of any text: a HeaderError, or a message that round-trips."""
    check_message(text)


@BOUNDED
@given(hostile_messages())
def test_hostile_messages_round_trip_through_the_model(message: tuple[bytes, str]) -> None:
    """Whatever the header checks make of it, the model reads and rewrites it losslessly."""
    check_message(message[0].decode("latin-1"))


@BOUNDED
@given(
    delimiter_sets(),
    st.text(max_size=50),
    st.integers(1, 60),
    st.integers(1, 50),
    st.integers(1, 40),
    st.one_of(st.none(), st.integers(1, 10)),
)
def test_a_value_written_anywhere_deep_reads_back_unchanged(
    d: Delimiters,
    value: str,
    field: int,
    repetition: int,
    component: int,
    subcomponent: int | None,
) -> None:
    """Deep repetitions, components and subcomponents; any value, delimiters included."""
    msh = "MSH" + d.field + d.encoding_characters + d.field + "A"
    message = Message.parse(msh + "\rPID" + d.field + "1\r")
    path = FieldPath("PID", field, None, repetition, component, subcomponent)
    check_write_read(message, path, value)
    check_escaping(value, d)


@BOUNDED
@given(st.text(max_size=200), delimiter_sets())
def test_escaping_round_trips_and_unescaping_anything_is_safe(value: str, d: Delimiters) -> None:
    """Invalid, unterminated and odd escape sequences never raise."""
    check_escaping(value, d)


# -- reading a PACS's answer --------------------------------------------------------------------


@BOUNDED
@given(st.binary(max_size=400))
def test_any_answer_from_a_pacs_is_read_and_only_aa_or_ca_counts(data: bytes) -> None:
    """Garbage, half ACKs, ACKs with odd delimiters: read without an exception."""
    check_read_ack(data)
    check_read_ack(b"MSH|^~\\&|PACS\rMSA|" + data)


# -- the fuzzer's findings ----------------------------------------------------------------------

FINDINGS = {
    # codecs.lookup raised ValueError on a NUL in MSH-18; the connection was cut, nothing stored.
    "nul-in-msh18": b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|F1|P|2.5.1||||||8859/\x001\rPID|1\r",
    # int() refused the superscript digit that str.isdigit accepts, building the ACK.
    "superscript-version": b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|F2|P|2.\xc2\xb25\rPID|1\r",
    # A UTF-8 header with MSH-9 empty was answered in latin-1: MSA-2 and MSH-3 mangled.
    "utf8-header-no-type": "MSH|^~\\&|HÔPITAL|B|C|D|20260101|||F3é|P|2.5\r".encode(),
    # UTF-16 was accepted as MSH-18 and the ACK written in UTF-16, unreadable to the sender.
    "utf16-charset": b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|F4|P|2.5.1||||||UTF-16\r",
}


@pytest.mark.parametrize("payload", FINDINGS.values(), ids=FINDINGS.keys())
def test_fuzzer_findings_are_answered(payload: bytes) -> None:
    """Each input the fuzzer found crashing the checks or the ACK builder is now answered."""
    check_answers(payload)


def test_only_ascii_digits_make_a_version_and_only_ascii_safe_codecs_a_charset() -> None:
    """'2.²5' stops at '²'; UTF-16, UTF-32 and EBCDIC cannot carry MLLP; NUL names nothing."""
    assert version_tuple("2.²5") == (2,)
    assert [codec_for(name) for name in ("UTF-16", "utf-32", "cp500", "8859/\x001")] == [None] * 4
    assert examine(FINDINGS["utf16-charset"]).problem is not None


def test_hostile_frames_over_a_socket_each_get_their_answer_and_a_stored_row(db_url: str) -> None:
    """The findings and a spread of hostile frames through a running engine: one ACK per frame
    with its MSH-10, every one stored (rejected ones with their reason), the connection kept."""
    frames = [*FINDINGS.values(), b"\x00\x00", b"MSH", b"\xef\xbb\xbfMSH|^~\\&|A|B|C|D|1||ADT^A01|"]
    frames += [b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|OK1|P|2.5\rPID|1\r"]
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        peer.send_raw(b"garbage before any frame\r\n")
        answers = []
        for payload in frames:
            peer.send(payload)
            answers.append(read_ack(peer.read()))
        with pytest.raises(TimeoutError):
            peer.read(timeout=0.3)
        rows = stored_messages(open_store(db_url))
    problems = [examine(p).problem for p in frames]
    assert [a.control_id for a in answers] == [_control_id(p) for p in frames]
    assert [a.code for a in answers] == [
        "AA" if p is None else "AR" if p.reject else "AE" for p in problems
    ]
    assert [row.raw for row in rows] == frames
    for row, problem in zip(rows, problems, strict=True):
        if problem is None:
            assert row.status in MessageStatus.ACCEPTED
        else:
            assert row.status == MessageStatus.REJECTED and row.status_reason


@settings(
    max_examples=25,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(hostile_messages(), min_size=1, max_size=6))
def test_generated_hostile_frames_through_a_live_listener(
    tmp_path_factory: pytest.TempPathFactory, messages: list[tuple[bytes, str]]
) -> None:
    """Generated hostile frames, pipelined on one connection: exactly one answer each (original
    mode), in order, MSA-2 the frame's MSH-10."""
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'crosswalk.db'}"
    originals = [(p, c) for p, c in messages if not _enhanced(p)]
    with running_engine(url) as engine, Peer(engine.port()) as peer:
        for payload, _ in originals:
            peer.send(payload)
        answers = [read_ack(peer.read()) for _ in originals]
        with pytest.raises((TimeoutError, socket.timeout)):
            peer.read(timeout=0.2)
    assert [a.control_id for a in answers] == [_control_id(p) for p, _ in originals]


def _enhanced(payload: bytes) -> bool:
    header = examine(payload).header
    return header is not None and header.enhanced_mode


def _control_id(payload: bytes) -> str:
    """MSH-10 as an ACK's MSA-2 must echo it ('' when no header can be read)."""
    return sent_control_id(payload) if examine(payload).header else ""
