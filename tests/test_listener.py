"""The MLLP listener end to end on loopback: store before ACK, framing faults, timeouts, order."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.hl7v2.ack import read_ack
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import Peer
from tests.support import (
    adt,
    assert_fits,
    field,
    hl7,
    run_crosswalk,
    running_engine,
    segment,
    stored_messages,
)


def test_a_message_is_stored_before_its_aa_and_the_ack_is_kept(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        ack = peer.exchange(adt("C1"))
        # The row must exist the moment the AA is read: it was committed first.
        rows = stored_messages(open_store(db_url))
    assert read_ack(ack).code == "AA"
    (row,) = rows
    assert row.raw == adt("C1")
    assert row.status in MessageStatus.ACCEPTED
    assert (row.control_id, row.message_type, row.version_id) == ("C1", "ADT^A01^ADT_A01", "2.5.1")
    assert (row.sending_application, row.sending_facility) == ("EPIC", "GENHOSP")
    assert (row.receiving_application, row.receiving_facility) == ("PACS", "RADIOLOGY")
    assert (row.message_code, row.trigger_event, row.processing_id) == ("ADT", "A01", "P")
    assert row.message_datetime == "20261123101500"
    assert row.listener == "test" and row.peer.startswith("127.0.0.1:")
    assert row.ack == ack and row.ack_code == "AA"
    assert row.charset == "UNICODE UTF-8"


def test_pipelined_messages_are_answered_one_ack_each_in_order(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        for i in range(40):
            peer.send(adt(f"P{i:03d}"))
        acks = [read_ack(peer.read()) for _ in range(40)]
        with pytest.raises(TimeoutError):
            peer.read(timeout=0.3)  # exactly one ACK per message
    assert [a.control_id for a in acks] == [f"P{i:03d}" for i in range(40)]
    assert {a.code for a in acks} == {"AA"}


def test_concurrent_connections_each_keep_their_order(db_url: str) -> None:
    per_connection, connections = 30, 8
    answers: dict[int, list[str]] = {}

    def sender(number: int, port: int) -> None:
        with Peer(port) as peer:
            answers[number] = [
                read_ack(peer.exchange(adt(f"K{number}-{i:03d}"))).control_id
                for i in range(per_connection)
            ]

    with running_engine(db_url) as engine:
        threads = [
            threading.Thread(target=sender, args=(n, engine.port())) for n in range(connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        rows = stored_messages(open_store(db_url))
    for number in range(connections):
        assert answers[number] == [f"K{number}-{i:03d}" for i in range(per_connection)]
    assert len(rows) == connections * per_connection
    for number in range(connections):
        mine = [r.control_id for r in rows if r.control_id.startswith(f"K{number}-")]
        assert mine == sorted(mine), "a connection's messages are stored in arrival order"


def test_garbage_between_frames_is_skipped_and_counted(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        peer.send_raw(b"NOISE\r\n" + b"\x0b" + adt("G1") + b"\x1c\r")
        assert read_ack(peer.read()).code == "AA"
        assert engine.stats().garbage_bytes == len(b"NOISE\r\n")


def test_a_truncated_frame_followed_by_a_new_one_resynchronises(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        peer.send_raw(b"\x0bMSH|^~\\&|CUT OFF")
        peer.send(adt("R1"))
        assert read_ack(peer.read()).control_id == "R1"
        assert engine.stats().truncated_frames == 1


@pytest.mark.parametrize("ending", [b"\x1c", b"\x1c\r\n", b"\x1c\n"], ids=["no-cr", "crlf", "lf"])
def test_sloppy_frame_ends_are_tolerated(db_url: str, ending: bytes) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        peer.send_raw(b"\x0b" + adt("E1") + ending)
        assert read_ack(peer.read()).code == "AA"
        peer.send_raw(b"\x0b" + adt("E2") + ending)
        assert read_ack(peer.read()).control_id == "E2"


def test_lf_segment_separators_are_accepted_by_default_and_rejected_when_strict(
    db_url: str,
) -> None:
    payload = adt("L1").replace(b"\r", b"\n")
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(payload)).code == "AA"
    with running_engine(db_url, strict_segments=True) as engine, Peer(engine.port()) as peer:
        reply = read_ack(peer.exchange(adt("L2").replace(b"\r", b"\n")))
    assert reply.code == "AR"
    assert "LF" in reply.text


def test_an_oversize_message_gets_a_nak_naming_the_limit_and_the_connection_stays_usable(
    db_url: str,
) -> None:
    big = adt("BIG1").replace(b"PV1|1|O", b"NTE|1||" + b"x" * 5000)
    with running_engine(db_url, max_message_size=2048) as engine, Peer(engine.port()) as peer:
        reply = read_ack(peer.exchange(big))
        after = read_ack(peer.exchange(adt("AFTER")))
        rows = stored_messages(open_store(db_url))
    assert reply.code == "AR" and reply.control_id == "BIG1"
    assert "2048" in reply.text and str(len(big)) in reply.text
    assert reply.error.startswith("207 Application internal error")
    assert after.code == "AA"
    oversize = rows[0]
    assert oversize.status == MessageStatus.REJECTED
    assert oversize.size == len(big) and oversize.raw == big[:2048]


def test_a_peer_stalling_mid_frame_is_dropped_after_the_read_timeout(db_url: str) -> None:
    with running_engine(db_url, read_timeout=0.4) as engine, Peer(engine.port()) as peer:
        peer.send_raw(b"\x0bMSH|^~\\&|HALF")
        started = time.monotonic()
        assert peer.closed_by_peer(timeout=5)
        assert time.monotonic() - started < 3
        assert engine.stats().read_timeouts == 1


def test_an_idle_connection_is_closed_after_the_idle_timeout(db_url: str) -> None:
    with running_engine(db_url, idle_timeout=0.4) as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(adt("I1"))).code == "AA"
        assert peer.closed_by_peer(timeout=5)
        assert engine.stats().idle_timeouts == 1


def test_a_sender_that_half_closes_still_gets_its_acks(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        peer.send(adt("H1"))
        peer.send(adt("H2"))
        peer.sock.shutdown(socket.SHUT_WR)
        assert [read_ack(peer.read()).control_id for _ in range(2)] == ["H1", "H2"]


@pytest.mark.parametrize(
    ("payload", "code", "err_code"),
    [
        (hl7("PID|1||123||DOE^JANE"), "AR", "100"),
        (hl7("MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|20261123||ADT^A01||P|2.5.1"), "AR", "101"),
        (hl7("MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|20261123|||C5|P|2.5.1"), "AR", "101"),
        (hl7("MSH|^~|EPIC"), "AR", "102"),
    ],
    ids=["no-msh", "no-control-id", "no-message-type", "bad-encoding-characters"],
)
def test_unreadable_messages_are_refused_specifically_and_kept_as_rejected(
    db_url: str, payload: bytes, code: str, err_code: str
) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        reply = read_ack(peer.exchange(payload))
        rows = stored_messages(open_store(db_url))
    assert reply.code == code
    assert err_code in reply.error
    (row,) = rows
    assert row.status == MessageStatus.REJECTED
    assert row.raw == payload
    assert err_code in row.status_reason
    assert row.ack_code == code


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (adt("NUL\x00ID"), "MSH-10"),
        (adt("N1").replace(b"EPIC", b"EP\x00IC"), "MSH-3"),
        (adt("N2").replace(b"MSH|", b"MSH\x00"), "MSH-1"),
        (adt("N3").replace(b"^~\\&", b"^~\x00&"), "MSH-2"),
    ],
    ids=["control-id", "sending-application", "field-separator", "encoding-character"],
)
def test_a_nul_in_the_header_is_refused_alike_on_every_store(
    db_url: str, payload: bytes, where: str
) -> None:
    """PostgreSQL cannot keep NUL in text, SQLite can: both refuse it (AR), keep the bytes as
    received, and the next message on the connection is accepted (no AE for ever)."""
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        reply = read_ack(peer.exchange(payload))
        after = read_ack(peer.exchange(adt("AFTER")))
        rows = stored_messages(open_store(db_url))
    assert (reply.code, reply.error) == ("AR", f"102 Data type error at {where}")
    assert after.code == "AA"
    rejected, accepted = rows
    assert rejected.status == MessageStatus.REJECTED and rejected.raw == payload
    assert "\x00" not in rejected.control_id + rejected.sending_application
    assert accepted.control_id == "AFTER"


def test_latin1_message_is_accepted_and_answered_in_its_charset(db_url: str) -> None:
    payload = (
        adt("LAT1", extra_msh="||||||8859/1", pid="PID|1||1||NUÑEZ^JOSÉ").decode().encode("latin-1")
    )
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        ack = peer.exchange(payload)
        rows = stored_messages(open_store(db_url))
    assert field(ack, "MSH", 18, "latin-1") == "8859/1"
    assert read_ack(ack).code == "AA"
    assert rows[0].charset == "8859/1" and rows[0].raw == payload


def test_undecodable_bytes_get_an_ae_and_the_message_is_kept(db_url: str) -> None:
    payload = adt("BAD8", pid="PID|1||1||NU\x00EZ").replace(b"\x00", b"\xd1")
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        reply = read_ack(peer.exchange(payload))
        rows = stored_messages(open_store(db_url))
    assert reply.code == "AE"
    assert reply.error == "102 Data type error at PID-5"
    assert rows[0].status == MessageStatus.REJECTED and rows[0].raw == payload


def test_listener_default_charset_is_used_when_msh18_is_empty(db_url: str) -> None:
    payload = adt("DEF1", pid="PID|1||1||MÜLLER").decode().encode("latin-1")
    with running_engine(db_url, charset="8859/1") as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(payload)).code == "AA"


def test_a_resent_message_is_answered_aa_kept_as_duplicate_and_not_processed_again(
    db_url: str,
) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        first = read_ack(peer.exchange(adt("D1")))
        second = read_ack(peer.exchange(adt("D1")))
        other_facility = read_ack(peer.exchange(adt("D1").replace(b"GENHOSP", b"OTHERHOSP", 1)))
        rows = stored_messages(open_store(db_url))
    assert (first.code, second.code, other_facility.code) == ("AA", "AA", "AA")
    assert "duplicate" in second.text
    assert [r.status in MessageStatus.ACCEPTED for r in rows] == [True, False, True]
    assert rows[1].status == MessageStatus.DUPLICATE
    assert rows[1].duplicate_of == rows[0].id


def test_a_rejected_message_fixed_and_resent_with_the_same_id_is_not_a_duplicate(
    db_url: str,
) -> None:
    broken = adt("FIX1", pid="PID|1||1||NU\x00EZ").replace(b"\x00", b"\xd1")
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(broken)).code == "AE"
        assert read_ack(peer.exchange(adt("FIX1"))).code == "AA"
        rows = stored_messages(open_store(db_url))
    assert rows[0].status == MessageStatus.REJECTED
    assert rows[1].status in MessageStatus.ACCEPTED


def test_duplicate_detection_can_be_switched_off(db_url: str) -> None:
    with running_engine(db_url, duplicate_window=0) as engine, Peer(engine.port()) as peer:
        peer.exchange(adt("W1"))
        peer.exchange(adt("W1"))
        rows = stored_messages(open_store(db_url))
    assert all(r.status in MessageStatus.ACCEPTED for r in rows) and len(rows) == 2


def test_enhanced_mode_sends_the_accept_ack_then_the_application_ack(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        peer.send(adt("EN1", extra_msh="|||AL|AL"))
        accept, application = peer.read(), peer.read()
        peer.send(adt("EN2", extra_msh="|||NE|NE"))
        peer.send(adt("EN3", extra_msh="|||AL|NE"))
        third = read_ack(peer.read())
        rows = stored_messages(open_store(db_url))
    assert read_ack(accept).code == "CA" and read_ack(application).code == "AA"
    assert segment(accept, "MSH")[15:17] == ["NE", "NE"]
    assert third.code == "CA" and third.control_id == "EN3"  # EN2 asked for no ACK at all
    assert [r.control_id for r in rows] == ["EN1", "EN2", "EN3"]
    assert rows[1].ack_code == "" and rows[1].status in MessageStatus.ACCEPTED


def test_msh15_ne_with_msh16_empty_gets_the_answer_of_original_mode(
    db_url: str, tmp_path: Path
) -> None:
    """NE and an empty MSH-16 asks for no accept ACK and, MSH-16 counting as AL, for the
    application ACK: AA when stored, AR when refused; `crosswalk send` waits for it."""
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        stored = read_ack(peer.exchange(adt("NE1", extra_msh="|||NE|")))
        refused = read_ack(peer.exchange(hl7("MSH|^~\\&|A|B|C|D|20261123||ADT^A01||P|2.5.1|||NE|")))
        sample = tmp_path / "ne.hl7"
        sample.write_bytes(adt("NE2", extra_msh="|||NE|"))
        sent = run_crosswalk("send", "--timeout", "10", f"127.0.0.1:{engine.port()}", str(sample))
        rows = stored_messages(open_store(db_url))
    assert (stored.code, stored.control_id) == ("AA", "NE1")
    assert refused.code == "AR" and "101" in refused.error
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "NE2  AA" in sent.stdout and "1 of 1 message(s) acknowledged positively" in sent.stdout
    assert [(r.control_id, r.ack_code) for r in rows] == [("NE1", "AA"), ("", "AR"), ("NE2", "AA")]


def test_messages_show_gives_the_acks_texts_unescaped(db_url: str) -> None:
    """The MSA-3 and ERR-8 of a refusal are stored escaped, as sent; `messages show` prints them
    as a person reads them."""
    payload = hl7("MSH|^~\\&|A|B|C|D|20261123||ADT^A01|CS1|P|2.5.1||||||FOO^BAR&X")
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        ack = peer.exchange(payload)
    assert b"FOO\\S\\BAR\\T\\X" in ack  # on the wire, escaped
    shown = run_crosswalk("messages", "show", "1", "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    lines = [" ".join(line.split()) for line in shown.stdout.splitlines()]
    for path in ("MSA-3", "ERR-8"):
        shown_line = next(line for line in lines if line.startswith(path))
        assert shown_line.startswith(f"{path} character set 'FOO^BAR&X' is not supported")
    assert "\\S\\" not in shown.stdout and "\\T\\" not in shown.stdout
    assert "ERR-3.2 Table value not found" in lines


def test_enhanced_mode_rejection_is_a_cr(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        payload = hl7("MSH|^~\\&|A|B|C|D|20261123||ADT^A01||P|2.5.1|||AL|AL")
        assert read_ack(peer.exchange(payload)).code == "CR"


def test_a_message_that_cannot_be_stored_gets_an_error_never_an_aa(db_url: str) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(adt("OK1"))).code == "AA"
        store = open_store(db_url)
        with store.begin() as connection:
            connection.execute(text("ALTER TABLE messages RENAME TO messages_away"))
        failed = read_ack(peer.exchange(adt("LOST1")))
        failed_enhanced = read_ack(peer.exchange(adt("LOST2", extra_msh="|||AL|NE")))
        with store.begin() as connection:
            connection.execute(text("ALTER TABLE messages_away RENAME TO messages"))
        recovered = read_ack(peer.exchange(adt("OK2")))
        rows = stored_messages(store)
    assert failed.code == "AE" and "could not be stored" in failed.text
    assert "207" in failed.error
    assert failed_enhanced.code == "CE"
    assert recovered.code == "AA"
    assert [r.control_id for r in rows] == ["OK1", "OK2"]


def test_a_listener_no_route_reads_is_reported_once_not_per_message(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), running_engine(db_url) as engine:
        peer = Peer(engine.port())
        for n in range(3):
            assert read_ack(peer.exchange(adt(f"NR{n}"))).code == "AA"
        peer.close()
    rows = stored_messages(open_store(db_url))
    assert [r.status for r in rows] == [MessageStatus.FILTERED] * 3
    assert rows[0].status_reason == "no route takes messages from test"
    noted = [r for r in caplog.records if r.levelno >= logging.INFO and "no route" in r.message]
    assert [r.message for r in noted] == [
        "listener test: no route takes its messages; they are stored, acknowledged and marked"
        " filtered"
    ]
    assert not any("NR" in r.message for r in caplog.records if r.levelno >= logging.INFO)


def test_an_address_not_allowed_is_closed_at_once_and_logged_once_a_minute(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with running_engine(db_url, allow=["10.0.0.0/8", "fd00::/8"]) as engine:
        for _ in range(3):
            with Peer(engine.port(), timeout=5) as peer:
                assert peer.closed_by_peer(), "a stranger was let in"
        assert engine.stats().refused == 3 and engine.stats().frames == 0
    refusals = [r for r in caplog.records if "refused: its address is not in" in r.getMessage()]
    assert len(refusals) == 1, "one log line per address per minute"
    with running_engine(db_url, allow=["127.0.0.0/8"]) as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(adt("ALLOWED"))).code == "AA"


def test_connections_over_max_connections_are_closed_and_the_others_keep_working(
    db_url: str,
) -> None:
    with running_engine(db_url, max_connections=2) as engine:
        first, second = Peer(engine.port()), Peer(engine.port())
        try:
            assert read_ack(first.exchange(adt("C1"))).code == "AA"
            assert read_ack(second.exchange(adt("C2"))).code == "AA"
            with Peer(engine.port(), timeout=5) as third:
                assert third.closed_by_peer()
            assert read_ack(first.exchange(adt("C3"))).code == "AA"
        finally:
            first.close()
            second.close()
        assert engine.stats().refused == 1


def test_messages_list_at_80_columns_keeps_every_id_whole(db_url: str) -> None:
    ids = ["GH2026031600016ABCDE", "GH2026031600017ABCDE", "C3"]
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        for control_id in ids:
            assert read_ack(peer.exchange(adt(control_id))).code == "AA"
    listed = run_crosswalk("messages", "list", "--db", db_url, columns=80)
    assert listed.returncode == 0, listed.stderr
    rows = stored_messages(open_store(db_url))
    received = [r.received_at.astimezone().strftime("%Y-%m-%d") for r in rows]
    assert_fits(listed.stdout, 80, [*ids, "ADT^A01^ADT_A01", *received])
    assert "(left out to fit the terminal: listener, from; widen the" in listed.stdout
    wide = run_crosswalk("messages", "list", "--db", db_url, columns=200)
    assert "EPIC/GENHOSP" in wide.stdout and "left out" not in wide.stdout
