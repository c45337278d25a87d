"""Acknowledgements: original and enhanced mode, ERR in the form each version expects."""

from __future__ import annotations

import pytest

from engine.hl7v2.ack import Outcome, ack_codes, build_ack, read_ack
from engine.hl7v2.check import examine
from engine.hl7v2.errors import ErrorCode, Location, Problem
from tests.support import adt, field, segment

MISSING_PID3 = Problem(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 is empty", Location("PID", 1, 3))


def header_of(payload: bytes):  # type: ignore[no-untyped-def]
    header = examine(payload).header
    assert header is not None
    return header


def test_ack_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    ack = build_ack(header_of(adt("CTRL42")), "AA").encode()
    msh = segment(ack, "MSH")
    assert msh[3:7] == ["PACS", "RADIOLOGY", "EPIC", "GENHOSP"]
    assert msh[9] == "ACK^A01^ACK"
    assert msh[10] and msh[10] != "CTRL42"  # a fresh control id of its own
    assert (msh[11], msh[12]) == ("P", "2.5.1")
    assert segment(ack, "MSA")[1:3] == ["AA", "CTRL42"]


def test_each_ack_has_a_fresh_control_id() -> None:
    header = header_of(adt("C1"))
    ids = {field(build_ack(header, "AA").encode(), "MSH", 10) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) <= 20 for i in ids)


@pytest.mark.parametrize(
    ("version", "message_type"),
    [("2.2", "ACK"), ("2.3", "ACK^A01"), ("2.3.1", "ACK^A01^ACK"), ("2.7", "ACK^A01^ACK")],
)
def test_ack_message_type_follows_the_inbound_version(version: str, message_type: str) -> None:
    ack = build_ack(header_of(adt("C1", version=version)), "AA").encode()
    assert field(ack, "MSH", 9) == message_type
    assert field(ack, "MSH", 12) == version


def test_error_ack_from_v25_uses_err_2_3_4_and_8() -> None:
    ack = build_ack(header_of(adt("C1", version="2.5.1")), "AE", "PID-3 is empty", MISSING_PID3)
    err = segment(ack.encode(), "ERR")
    assert err[1] == ""
    assert err[2] == "PID^1^3^1"
    assert err[3] == "101^Required field missing^HL70357"
    assert err[4] == "E"
    assert err[8] == "PID-3 is empty"
    assert read_ack(ack.encode()).error == "101 Required field missing at PID-3"
    assert segment(ack.encode(), "MSA")[1:4] == ["AE", "C1", "PID-3 is empty"]


@pytest.mark.parametrize("version", ["2.3.1", "2.4"])
def test_error_ack_before_v25_uses_err_1(version: str) -> None:
    ack = build_ack(header_of(adt("C1", version=version)), "AR", "x", MISSING_PID3)
    err = segment(ack.encode(), "ERR")
    assert err[1] == "PID^1^3^101&Required field missing&HL70357"
    assert len(err) == 2
    assert read_ack(ack.encode()).error == "101 Required field missing at PID-3"


def test_ack_text_is_escaped_so_it_never_splits_a_field() -> None:
    ack = build_ack(header_of(adt("C1")), "AE", "bad | value ^ here")
    msa = segment(ack.encode(), "MSA")
    assert len(msa) == 4
    assert msa[3] == "bad \\F\\ value \\S\\ here"
    assert read_ack(ack.encode()).text == "bad | value ^ here"


def test_ack_keeps_the_senders_delimiters() -> None:
    payload = b"MSH^~|\\&^SEND^FAC^RCV^FAC^20120918^^ADT~A24^CTRL1^T^2.4\rPID^1\r"
    ack = build_ack(header_of(payload), "AA")
    assert ack.startswith("MSH^~|\\&^RCV^FAC^SEND^FAC^")
    assert "\rMSA^AA^CTRL1" in ack


def test_ack_declares_the_inbound_character_set() -> None:
    payload = adt("C1", extra_msh="||||||8859/1")
    assert field(build_ack(header_of(payload), "AA").encode(), "MSH", 18) == "8859/1"


def test_ack_without_a_readable_header_still_says_why() -> None:
    problem = Problem(ErrorCode.SEGMENT_SEQUENCE, "no MSH", Location("MSH"), reject=True)
    ack = build_ack(None, "AR", "no MSH", problem).encode()
    assert segment(ack, "MSA")[1:4] == ["AR", "", "no MSH"]
    assert field(ack, "ERR", 3) == "100^Segment sequence error^HL70357"


def test_original_mode_sends_one_application_ack() -> None:
    header = header_of(adt("C1"))
    assert ack_codes(header, Outcome.ACCEPTED) == ["AA"]
    assert ack_codes(header, Outcome.ERROR) == ["AE"]
    assert ack_codes(header, Outcome.REJECTED) == ["AR"]


@pytest.mark.parametrize(
    ("msh15", "msh16", "outcome", "codes"),
    [
        ("AL", "NE", Outcome.ACCEPTED, ["CA"]),
        ("AL", "AL", Outcome.ACCEPTED, ["CA", "AA"]),
        ("NE", "AL", Outcome.ACCEPTED, ["AA"]),
        ("NE", "NE", Outcome.ACCEPTED, []),
        ("ER", "NE", Outcome.ACCEPTED, []),
        ("ER", "NE", Outcome.ERROR, ["CE"]),
        ("SU", "NE", Outcome.ACCEPTED, ["CA"]),
        ("SU", "NE", Outcome.REJECTED, []),
        ("AL", "SU", Outcome.ACCEPTED, ["CA", "AA"]),
        ("AL", "ER", Outcome.ACCEPTED, ["CA"]),
        ("AL", "AL", Outcome.REJECTED, ["CR"]),
        ("", "AL", Outcome.ACCEPTED, ["CA", "AA"]),
        # An empty MSH-16 is AL: NE and nothing else is original mode (HL7 v2.8.2 ch. 2).
        ("NE", "", Outcome.ACCEPTED, ["AA"]),
        ("NE", "", Outcome.ERROR, ["AE"]),
        ("NE", "", Outcome.REJECTED, ["AR"]),
        ("AL", "", Outcome.ACCEPTED, ["CA", "AA"]),
        ("AL", "", Outcome.REJECTED, ["CR"]),
        # No accept ACK asked for: the application ACK reports a refusal when it is wanted.
        ("NE", "AL", Outcome.REJECTED, ["AR"]),
        ("NE", "ER", Outcome.ERROR, ["AE"]),
        ("NE", "ER", Outcome.ACCEPTED, []),
        ("NE", "SU", Outcome.REJECTED, []),
        ("SU", "AL", Outcome.REJECTED, ["AR"]),
        ("ER", "AL", Outcome.REJECTED, ["CR"]),
    ],
)
def test_enhanced_mode_follows_table_0155(
    msh15: str, msh16: str, outcome: Outcome, codes: list[str]
) -> None:
    """MSH-15 governs the accept ACK, MSH-16 the application ACK (AL, NE, ER, SU)."""
    header = header_of(adt("C1", extra_msh=f"|||{msh15}|{msh16}"))
    assert header.enhanced_mode
    assert ack_codes(header, outcome) == codes


def test_accept_acks_ask_for_no_acknowledgement_themselves() -> None:
    header = header_of(adt("C1", extra_msh="|||AL|AL"))
    msh = segment(build_ack(header, "CA").encode(), "MSH")
    assert (msh[15], msh[16]) == ("NE", "NE")
