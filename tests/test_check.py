"""The intake checks: MSH, encoding characters, required fields, character sets, segment ends."""

from __future__ import annotations

import pytest

from engine.hl7v2.check import examine
from engine.hl7v2.errors import ErrorCode, Location
from engine.hl7v2.header import HeaderError, read_delimiters
from tests.support import adt, hl7


def test_a_good_message_has_no_problem_and_its_header_is_read() -> None:
    exam = examine(adt("C1"))
    assert exam.problem is None
    header = exam.header
    assert header is not None
    assert (header.sending_application, header.sending_facility) == ("EPIC", "GENHOSP")
    assert (header.message_code, header.trigger_event, header.message_structure) == (
        "ADT",
        "A01",
        "ADT_A01",
    )
    assert (header.control_id, header.processing_id, header.version) == ("C1", "P", "2.5.1")


@pytest.mark.parametrize(
    ("payload", "code", "location", "words"),
    [
        (b"PID|1||123\r", ErrorCode.SEGMENT_SEQUENCE, Location("MSH"), "begins with 'PID'"),
        (b"\x00\x01garbage", ErrorCode.SEGMENT_SEQUENCE, Location("MSH"), "does not begin"),
        (b"FHS|^~\\&|A\rBHS|^~\\&\r", ErrorCode.SEGMENT_SEQUENCE, Location("MSH"), "batch"),
        (b"MSH|^~\\|A|B\r", ErrorCode.DATA_TYPE, Location("MSH", field=2), "encoding characters"),
        (b"MSH|^^\\&|A|B\r", ErrorCode.DATA_TYPE, Location("MSH", field=2), "differ"),
        (b"MSHA^~\\&|A\r", ErrorCode.DATA_TYPE, Location("MSH", field=1), "field separator"),
        (b"MSH|^~\r", ErrorCode.REQUIRED_FIELD_MISSING, Location("MSH", field=2), "ends before"),
        (
            hl7("MSH|^~\\&|A|B|C|D|20260101|||C9|P|2.5"),
            ErrorCode.REQUIRED_FIELD_MISSING,
            Location("MSH", field=9),
            "MSH-9",
        ),
        (
            hl7("MSH|^~\\&|A|B|C|D|20260101||ADT^A01||P|2.5"),
            ErrorCode.REQUIRED_FIELD_MISSING,
            Location("MSH", field=10),
            "MSH-10",
        ),
        (
            hl7("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5||||||EBCDIC"),
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            Location("MSH", field=18),
            "'EBCDIC' is not supported",
        ),
    ],
    ids=[
        "no-msh",
        "binary",
        "batch-in-one-frame",
        "three-encoding-chars",
        "repeated-encoding-char",
        "alnum-field-separator",
        "truncated-msh",
        "no-msh-9",
        "no-msh-10",
        "unknown-charset",
    ],
)
def test_envelope_problems_are_rejected_with_the_field_at_fault(
    payload: bytes, code: ErrorCode, location: Location, words: str
) -> None:
    """Each header defect gets its own table 0357 code and location, and is an AR."""
    problem = examine(payload).problem
    assert problem is not None
    assert problem.code == code
    assert problem.location == location
    assert words in problem.text
    assert problem.reject


def test_undecodable_bytes_are_an_error_located_at_their_field() -> None:
    """Latin-1 bytes in a message that declares UTF-8: AE naming PID-5."""
    payload = hl7(
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5||||||UNICODE UTF-8",
        "PID|1||123||NU\xd1EZ^JOSE",
    ).replace("\xd1".encode(), b"\xd1")
    problem = examine(payload).problem
    assert problem is not None
    assert problem.code == ErrorCode.DATA_TYPE
    assert problem.location == Location("PID", 1, 5)
    assert "0xD1" in problem.text and "UNICODE UTF-8" in problem.text
    assert not problem.reject


def test_msh18_overrides_the_listener_default() -> None:
    """The same Latin-1 bytes are fine when MSH-18 says 8859/1."""
    payload = (
        hl7("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5||||||8859/1", "PID|1||123||NU\xd1EZ")
        .decode("utf-8")
        .encode("latin-1")
    )
    exam = examine(payload, default_charset="UNICODE UTF-8")
    assert exam.problem is None
    assert exam.codec == "iso8859-1"


def test_the_listener_default_applies_when_msh18_is_empty() -> None:
    payload = "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5\rPID|1||1||MÜLLER\r".encode("latin-1")
    assert examine(payload, default_charset="8859/1").problem is None
    assert examine(payload, default_charset="UNICODE UTF-8").problem is not None


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_lf_segment_ends_are_accepted_unless_the_listener_is_strict(ending: bytes) -> None:
    payload = adt("C1").replace(b"\r", ending)
    assert examine(payload).problem is None
    strict = examine(payload, strict_segments=True).problem
    assert strict is not None and strict.reject
    assert strict.location == Location("MSH")
    assert "LF" in strict.text


def test_a_byte_order_mark_and_blank_lines_before_msh_are_ignored() -> None:
    assert examine(b"\xef\xbb\xbf" + adt("C1")).problem is None
    assert examine(b"\r\n" + adt("C1")).problem is None


def test_non_standard_delimiters_are_read_from_msh() -> None:
    """A sender may use any delimiters; MSH-1 and MSH-2 say which."""
    exam = examine(b"MSH^~|\\&^SEND^FAC^RCV^FAC^20120918^^ADT~A24^CTRL1^T^2.4\rPID^1\r")
    assert exam.problem is None
    assert exam.header is not None
    assert exam.header.message_type == "ADT~A24"
    assert exam.header.trigger_event == "A24"  # "~" is this sender's component separator
    assert exam.header.control_id == "CTRL1"


def test_delimiters_kept_by_their_declaration_stay_each_messages_own() -> None:
    """The delimiters read from a header are kept by the bytes that declare them (a feed's
    messages all begin alike): messages declaring others still get theirs, and a bad
    declaration is refused every time it comes."""
    usual = read_delimiters(b"MSH|^~\\&|EPIC|GENHOSP")
    other = read_delimiters(b"MSH#$%*@#EPIC#GENHOSP")
    newer = read_delimiters(b"MSH|^~\\&#|EPIC")  # v2.7: a truncation character
    assert (usual.field, usual.component, usual.subcomponent) == ("|", "^", "&")
    assert (other.field, other.component, other.repetition, other.subcomponent) == (
        "#",
        "$",
        "%",
        "@",
    )
    assert (newer.truncation, usual.truncation) == ("#", "")
    assert read_delimiters(b"MSH|^~\\&|RIS|ELSEWHERE") is usual
    for _ in range(2):
        with pytest.raises(HeaderError, match="must be 4 characters"):
            read_delimiters(b"MSH|^~\\|EPIC")
        with pytest.raises(HeaderError, match="must all differ"):
            read_delimiters(b"MSH|^~^&|EPIC")
