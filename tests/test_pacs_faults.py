"""A PACS that misbehaves: answers garbage, AR for ever, an AA naming no message, resets in the
middle of its ACK, or accepts and never reads. Each ends in the destination's documented policy
(docs/delivery.md), in order, nothing lost, and `queue status` says why the queue is not moving.

Stalls, closes before the ACK, refused connections and ACKs for another control id are in
tests/test_delivery.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.store.database import open_store
from engine.store.queue import read_controls, set_control, summarize
from engine.testing import FakeReceiver
from tests.fault_figures import print_fault_row
from tests.support import run_crosswalk, running_pipeline, stored_messages
from tests.test_delivery import deduplicated, ids, send_all, wait_until

NAK_RETRIES = 1


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", "answered no MSA: not an HL7 acknowledgement"),
        ("ar", "answered AR"),
        ("empty_id", "answered AA naming no message (MSA-2 empty, sent MSH-10 'G000')"),
    ],
)
def test_a_pacs_answering_wrongly_for_ever_stops_the_queue_and_says_why(
    db_url: str, tmp_path: Path, mode: str, reason: str
) -> None:
    """The head is sent 1 + nak_retries times, then the queue stops (on_nak: stop): nothing
    overtakes it, `queue status` shows PAUSED with the answer; resumed once the PACS is fixed,
    every message arrives in order."""
    pacs = FakeReceiver(mode=mode)
    with running_pipeline(db_url, tmp_path, pacs.port, nak_retries=NAK_RETRIES) as engine:
        send_all(engine.port(), ids("G", 4))
        store = open_store(db_url)
        assert wait_until(lambda: (c := read_controls(store).get("pacs")) is not None and c.paused)
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 4)
        assert pacs.control_ids() == ["G000"] * (1 + NAK_RETRIES), "nothing overtakes G000"
        (summary,) = summarize(store, ["pacs"])
        assert reason in summary.control.reason and summary.delivered == 0
        status = run_crosswalk("queue", "status", "--db", db_url)
        assert status.returncode == 0, status.stderr
        assert "PAUSED" in status.stdout and reason.split(" (")[0] in status.stdout
        pacs.mode = "ack"  # the PACS is fixed; `crosswalk queue resume pacs`
        set_control(store, "pacs", paused=False, reason="")
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 0)
        assert summarize(store, ["pacs"])[0].delivered == 4
        stored = [r.control_id for r in stored_messages(store)]
    pacs.stop()
    assert deduplicated(pacs.control_ids()) == ids("G", 4)
    row = f"PACS answers {mode} for ever (on_nak: stop), resumed once fixed"
    assert print_fault_row(row, ["AA"] * 4, stored, ids("G", 4), pacs.control_ids()) == 0


@pytest.mark.parametrize(
    ("mode", "errors"),
    [
        ("reset", ("lost: [Errno 104] Connection reset by peer", "closed the connection")),
        ("no_read", ("did not take the message", "no answer from")),
    ],
)
def test_a_pacs_breaking_the_connection_is_retried_in_order_until_it_mends(
    db_url: str, tmp_path: Path, mode: str, errors: tuple[str, ...]
) -> None:
    """A reset in the middle of an ACK, or a PACS that never reads (its TCP window fills with
    large messages): a transport failure, so the same head is retried with back-off for ever,
    `queue status` shows the last error; once the PACS mends, all arrive in order, none lost."""
    pacs = FakeReceiver(mode=mode)
    big = "PID|1||123456^^^GENHOSP^MR||DOE^JANE||19800304|F|||" + "X" * 600_000
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        send_all(engine.port(), ids("T", 4), pid=big)
        store = open_store(db_url)
        assert wait_until(lambda: pacs.connections >= 3)

        def failing() -> bool:
            return any(error in summarize(store, ["pacs"])[0].last_error for error in errors)

        assert wait_until(failing), summarize(store, ["pacs"])[0].last_error
        (summary,) = summarize(store, ["pacs"])
        assert summary.queued == 4 and summary.delivered == 0
        assert not summary.control.paused, "a transport failure is retried, not a NAK"
        status = run_crosswalk("queue", "status", "--db", db_url)
        assert any(error in status.stdout for error in errors), status.stdout
        pacs.mode = "ack"
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 0, timeout=30)
        stored = [r.control_id for r in stored_messages(store)]
    pacs.stop()
    received = pacs.control_ids()
    assert deduplicated(received) == ids("T", 4)
    row = f"PACS {mode} (600 KB messages), mended after 3 connections"
    assert print_fault_row(row, ["AA"] * 4, stored, ids("T", 4), received) == 0
    if mode == "reset":
        assert received.count("T000") >= 3, "the head was resent after each reset"


def test_an_aa_naming_no_message_is_not_a_success_even_when_set_aside(
    db_url: str, tmp_path: Path
) -> None:
    """on_nak: set_aside: each message answered AA with MSA-2 empty is set aside as errored
    (not delivered) with the reason, and the queue goes on."""
    pacs = FakeReceiver(mode="empty_id")
    with running_pipeline(db_url, tmp_path, pacs.port, nak_retries=0, on_nak="set_aside") as engine:
        send_all(engine.port(), ids("E", 3))
        store = open_store(db_url)
        assert wait_until(lambda: summarize(store, ["pacs"])[0].errored == 3)
        (summary,) = summarize(store, ["pacs"])
        assert summary.delivered == 0 and "naming no message" in summary.last_error
    pacs.stop()
    assert pacs.control_ids() == ids("E", 3)
