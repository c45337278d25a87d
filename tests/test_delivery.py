"""Delivery to a PACS on loopback that stalls, refuses, closes early or answers AE/AR."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.hl7v2.ack import read_ack
from engine.store.database import open_store
from engine.store.queue import read_controls, set_control, summarize
from engine.testing import FakeReceiver, Peer, free_port, wait_for_port
from tests.support import (
    adt,
    answers_to,
    assert_fits,
    cli_env,
    config_folder,
    crosswalk,
    destination_yaml,
    run_crosswalk,
    running_pipeline,
    stored_messages,
)


def send_all(port: int, control_ids: list[str], **kw: str) -> None:
    with Peer(port) as peer:
        for control_id in control_ids:
            assert read_ack(peer.exchange(adt(control_id, **kw))).code == "AA"


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(count)]


def wait_until(check, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def deduplicated(control_ids: list[str]) -> list[str]:
    """At-least-once delivery may repeat a message; what matters is the order."""
    result: list[str] = []
    for control_id in control_ids:
        if not result or result[-1] != control_id:
            result.append(control_id)
    return result


def test_messages_reach_the_pacs_in_order_through_an_outage(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver()
    port = pacs.port
    with running_pipeline(db_url, tmp_path, port) as engine:
        send_all(engine.port(), ids("A", 20))
        assert pacs.wait_for(20)
        pacs.stop()  # the PACS goes down: the engine keeps accepting and queueing
        send_all(engine.port(), ids("B", 20))
        time.sleep(0.5)
        pacs = FakeReceiver(port)  # back on the same port
        assert pacs.wait_for(20)
        assert wait_until(lambda: len(deduplicated(pacs.control_ids())) == 20)
    pacs.stop()
    assert deduplicated(pacs.control_ids()) == ids("B", 20)


def test_a_stalled_receiver_is_timed_out_and_the_message_resent(
    db_url: str, tmp_path: Path
) -> None:
    pacs = FakeReceiver(mode="stall")
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        send_all(engine.port(), ids("S", 3))
        assert pacs.wait_for(1)
        time.sleep(1.3)  # past the 1s ack_timeout
        pacs.mode = "ack"
        assert wait_until(lambda: deduplicated(pacs.control_ids()) == ids("S", 3))
    pacs.stop()
    assert pacs.control_ids()[:2] == ["S000", "S000"], "resent after the timeout"


def test_a_receiver_closing_before_its_ack_gets_the_message_again(
    db_url: str, tmp_path: Path
) -> None:
    pacs = FakeReceiver(mode="close")
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        send_all(engine.port(), ids("C", 3))
        assert wait_until(lambda: pacs.connections >= 2)
        pacs.mode = "ack"
        assert wait_until(lambda: deduplicated(pacs.control_ids()) == ids("C", 3))
    pacs.stop()


def test_a_refused_connection_is_retried(db_url: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet
    with running_pipeline(db_url, tmp_path, port) as engine:
        send_all(engine.port(), ids("R", 5))
        time.sleep(0.5)
        store = open_store(db_url)
        (summary,) = summarize(store, ["pacs"])
        assert summary.queued == 5
        assert "cannot connect" in summary.last_error
        pacs = FakeReceiver(port)
        assert wait_until(lambda: deduplicated(pacs.control_ids()) == ids("R", 5))
    pacs.stop()


def test_a_nak_stops_the_queue_until_an_operator_resumes_it(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver()
    pacs.reject = {"N001"}
    with running_pipeline(db_url, tmp_path, pacs.port, nak_retries=1) as engine:
        send_all(engine.port(), ids("N", 4))
        store = open_store(db_url)
        assert wait_until(
            lambda: (
                read_controls(store).get("pacs", None) is not None
                and read_controls(store)["pacs"].paused
            )
        )
        time.sleep(0.3)
        assert pacs.control_ids() == ["N000", "N001", "N001"], "nothing overtakes N001"
        (summary,) = summarize(store, ["pacs"])
        assert summary.control.paused and "N001" in summary.control.reason
        assert "answered AR" in summary.control.reason
        assert summary.queued == 3
        pacs.reject = set()  # the PACS is fixed
        set_control(store, "pacs", paused=False, reason="")  # `crosswalk queue resume pacs`
        assert wait_until(lambda: pacs.control_ids()[-3:] == ["N001", "N002", "N003"])
    pacs.stop()


def test_set_aside_moves_on_and_retry_puts_it_back(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver()
    pacs.reject = {"X001"}
    with running_pipeline(db_url, tmp_path, pacs.port, nak_retries=0, on_nak="set_aside") as engine:
        send_all(engine.port(), ids("X", 4))
        assert wait_until(lambda: pacs.control_ids() == ["X000", "X001", "X002", "X003"])
        store = open_store(db_url)
        assert wait_until(lambda: summarize(store, ["pacs"])[0].errored == 1)
        listed = subprocess.run(
            crosswalk(
                "messages", "list", "--db", db_url, "--status", "errored", "--format", "json"
            ),
            capture_output=True,
            text=True,
            env=cli_env(),
            check=True,
        )
        assert '"control_id": "X001"' in listed.stdout
        pacs.reject = set()
        retried = subprocess.run(
            crosswalk("queue", "retry", "pacs", "--db", db_url),
            capture_output=True,
            text=True,
            env=cli_env(),
        )
        assert "1 message(s) back in the queue" in retried.stdout
        assert wait_until(lambda: pacs.control_ids()[-1:] == ["X001"])
    pacs.stop()


def test_pause_and_resume_from_the_command_line(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver()
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        subprocess.run(
            crosswalk("queue", "pause", "pacs", "--db", db_url),
            env=cli_env(),
            check=True,
            capture_output=True,
        )
        time.sleep(1.5)  # the engine polls the controls every second
        send_all(engine.port(), ids("P", 3))
        time.sleep(0.5)
        assert pacs.control_ids() == []
        status = subprocess.run(
            crosswalk("queue", "status", "--db", db_url),
            env=cli_env(),
            capture_output=True,
            text=True,
        )
        assert "PAUSED" in status.stdout and "paused by operator" in status.stdout
        subprocess.run(
            crosswalk("queue", "resume", "pacs", "--db", db_url),
            env=cli_env(),
            check=True,
            capture_output=True,
        )
        assert wait_until(lambda: pacs.control_ids() == ids("P", 3))
    pacs.stop()


def test_partitions_keep_each_patients_order(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver()
    with (
        running_pipeline(
            db_url, tmp_path, pacs.port, partition_by="PID-3.1", partitions=4
        ) as engine,
        Peer(engine.port()) as peer,
    ):
        for i in range(40):
            patient = f"MRN{i % 8}"
            pid = f"PID|1||{patient}^^^GENHOSP^MR||DOE^JANE"
            assert read_ack(peer.exchange(adt(f"{patient}-{i:02d}", pid=pid))).code == "AA"
        assert pacs.wait_for(40)
    pacs.stop()
    received = pacs.control_ids()
    for n in range(8):
        mine = [c for c in received if c.startswith(f"MRN{n}-")]
        assert mine == sorted(mine) and len(mine) == 5
    deliveries = [p for p in stored_messages(open_store(db_url))]
    assert len(deliveries) == 40


def test_resend_queues_a_message_again(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver()
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        send_all(engine.port(), ["RS1"])
        assert pacs.wait_for(1)
        (message,) = stored_messages(open_store(db_url))
        folder = tmp_path / "routes"
        result = subprocess.run(
            crosswalk(
                "messages", "resend", str(message.id), "--db", db_url, "--config", str(folder)
            ),
            capture_output=True,
            text=True,
            env=cli_env(),
        )
        assert result.returncode == 0, result.stderr
        assert f"message {message.id}: routed; queued for pacs" in result.stdout
        assert wait_until(lambda: pacs.control_ids() == ["RS1", "RS1"])
    pacs.stop()


def test_a_restart_with_a_full_queue_loses_nothing(db_url: str, tmp_path: Path) -> None:
    """SIGKILL the engine while its queue holds messages the PACS never got."""
    pacs_port, port = free_port(), free_port()
    folder = config_folder(
        tmp_path,
        "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n",
        endpoints=destination_yaml(pacs_port).replace("ehr: {port: 0}", f"ehr: {{port: {port}}}"),
    )
    command = crosswalk("serve", "--db", db_url, "--config", str(folder))
    log = (tmp_path / "engine.log").open("ab")
    engine = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=cli_env())
    try:
        wait_for_port(port, engine)
        send_all(port, ids("K", 30))  # all AA'd and stored; the PACS is down
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        pacs = FakeReceiver(pacs_port)
        engine = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=cli_env())
        wait_for_port(port, engine)
        assert wait_until(lambda: deduplicated(pacs.control_ids()) == ids("K", 30), 30)
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(30)
    pacs.stop()


def test_queue_status_shows_what_waits_to_be_routed(db_url: str, tmp_path: Path) -> None:
    """Messages stored while no engine routed them (it was stopped after intake): `queue status`
    says so, and the next start routes and delivers them."""
    import asyncio

    from engine.pipeline.intake import Intake
    from engine.pipeline.settings import ListenerSettings
    from engine.store.writer import StoreWriter

    async def store_only() -> None:
        writer = StoreWriter(open_store(db_url))
        writer.start()
        intake = Intake(writer, ListenerSettings(name="ehr"))
        for control_id in ids("W", 2):
            done: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
            intake.on_frame(adt(control_id), "test", answers_to(done))
            await done
        await writer.close()

    def status() -> str:
        return subprocess.run(
            crosswalk("queue", "status", "--db", db_url, "--config", str(tmp_path / "none")),
            env=cli_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    asyncio.run(store_only())
    assert "routing: 2 message(s) received and not routed yet, the oldest" in status()
    pacs = FakeReceiver()
    with running_pipeline(db_url, tmp_path, pacs.port):
        assert pacs.wait_for(2)
    pacs.stop()
    assert pacs.control_ids() == ids("W", 2)
    assert "routing:" not in status()


def test_a_long_control_id_is_matched_whole_and_the_queue_moves_on(
    db_url: str, tmp_path: Path
) -> None:
    """An MSH-10 of 300 characters: the PACS echoes it whole in MSA-2, the delivery counts as
    acknowledged, and the next message follows (it used to be resent for ever)."""
    pacs = FakeReceiver()
    long_id = "L" * 300
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        send_all(engine.port(), [long_id, "NEXT"])
        assert wait_until(lambda: pacs.control_ids()[-1:] == ["NEXT"])
        store = open_store(db_url)
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 0)
    pacs.stop()
    assert pacs.control_ids() == [long_id, "NEXT"]


def test_an_ack_for_another_message_is_a_refusal_not_silence(db_url: str, tmp_path: Path) -> None:
    """A PACS answering AA with a wrong MSA-2: the destination's error policy applies (here set
    the message aside and go on), and the reason says what was answered."""
    pacs = FakeReceiver(mode="wrong_id")
    with running_pipeline(db_url, tmp_path, pacs.port, nak_retries=1, on_nak="set_aside") as engine:
        send_all(engine.port(), ["W000"])
        store = open_store(db_url)
        assert wait_until(lambda: summarize(store, ["pacs"])[0].errored == 1)
        pacs.mode = "ack"
        send_all(engine.port(), ["W001"])
        assert wait_until(lambda: pacs.control_ids()[-1:] == ["W001"])
        (summary,) = summarize(store, ["pacs"])
        assert "answered AA for another message" in summary.last_error
        assert "'NOTW000'" in summary.last_error and "'W000'" in summary.last_error
    pacs.stop()
    assert pacs.control_ids() == ["W000", "W000", "W001"]


def test_an_ack_for_another_message_stops_an_ordered_queue(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver(mode="wrong_id")
    with running_pipeline(db_url, tmp_path, pacs.port, nak_retries=0) as engine:
        send_all(engine.port(), ["V000", "V001"])
        store = open_store(db_url)
        assert wait_until(lambda: read_controls(store).get("pacs") is not None)
        assert wait_until(lambda: read_controls(store)["pacs"].paused)
        assert "answered AA for another message" in read_controls(store)["pacs"].reason
        time.sleep(0.3)
        assert pacs.control_ids() == ["V000"], "nothing overtakes V000"
    pacs.stop()


FAIL_DELIVERED = {
    "sqlite": [
        "CREATE TRIGGER fail_delivered BEFORE UPDATE OF state ON deliveries"
        " WHEN NEW.state = 'delivered' AND OLD.control_id = 'F002'"
        " BEGIN SELECT RAISE(ABORT, 'no space left (test)'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_delivered() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.state = 'delivered' AND OLD.control_id = 'F002' THEN"
        " RAISE EXCEPTION 'no space left (test)'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER fail_delivered BEFORE UPDATE ON deliveries"
        " FOR EACH ROW EXECUTE FUNCTION fail_delivered()",
    ],
}
REPAIR = {
    "sqlite": ["DROP TRIGGER fail_delivered"],
    "postgresql": ["DROP TRIGGER fail_delivered ON deliveries", "DROP FUNCTION fail_delivered()"],
}


def test_no_message_is_passed_while_an_earlier_outcome_is_not_stored(
    db_url: str, tmp_path: Path
) -> None:
    """The commit that records F002 as delivered fails (as on a full disk): nothing after F002 is
    recorded, the worker goes back to F002 and sends only it until its outcome is stored, and
    after a restart nothing old arrives after anything newer: each message's last copy reaches
    the PACS in order."""
    from sqlalchemy import text as sql

    store = open_store(db_url)
    dialect = store.dialect.name
    with store.begin() as connection:
        for statement in FAIL_DELIVERED[dialect]:
            connection.execute(sql(statement))
    pacs = FakeReceiver()
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        send_all(engine.port(), ids("F", 6))
        # the worker sends F002 again 1 s, then 2 s after each failed commit (store backoff)
        assert wait_until(lambda: pacs.control_ids().count("F002") >= 3, timeout=30)
        (summary,) = summarize(store, ["pacs"])
        assert summary.queued == 4, "nothing after F002 is recorded as delivered"
        assert pacs.control_ids()[-2:] == ["F002", "F002"], "only F002 is sent while it fails"
        with store.begin() as connection:  # space is freed
            for statement in REPAIR[dialect]:
                connection.execute(sql(statement))
        assert wait_until(lambda: pacs.control_ids()[-1:] == ["F005"], timeout=30)
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 0)
    with running_pipeline(db_url, tmp_path, pacs.port):
        time.sleep(0.5)  # a restart sends nothing stale
    pacs.stop()
    received = pacs.control_ids()
    last_copies = sorted(
        set(received), key=lambda c: max(i for i, r in enumerate(received) if r == c)
    )
    assert last_copies == ids("F", 6)


def test_a_queue_over_its_window_in_bytes_is_read_from_the_store_in_order(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker holds at most WINDOW_BYTES of payload; the rest waits in the store and is read
    a budget at a time, in order, nothing lost or doubled."""
    from engine.pipeline import delivery
    from engine.store.queue import load_queued

    monkeypatch.setattr(delivery, "WINDOW_BYTES", 3 * len(adt("Y000")))
    pacs = FakeReceiver()
    port = pacs.port
    pacs.stop()
    with running_pipeline(db_url, tmp_path, port) as engine:
        send_all(engine.port(), ids("Y", 12))
        store = open_store(db_url)
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 12)
        size = len(load_queued(store, "pacs", 0, 0, limit=1)[0].payload)
        assert len(load_queued(store, "pacs", 0, 0, max_bytes=2 * size)) == 2
        assert len(load_queued(store, "pacs", 0, 0, max_bytes=1)) == 1, "at least one"
        pacs = FakeReceiver(port)
        assert wait_until(lambda: deduplicated(pacs.control_ids()) == ids("Y", 12))
    pacs.stop()


def test_a_misspelt_destination_is_refused_with_the_names(db_url: str, tmp_path: Path) -> None:
    folder = config_folder(tmp_path, "routes: {}\n", endpoints=destination_yaml(9))
    for command in ("pause", "resume", "retry"):
        done = subprocess.run(
            crosswalk("queue", command, "pcas", "--config", str(folder), "--db", db_url),
            capture_output=True,
            text=True,
            env=cli_env(),
        )
        assert done.returncode == 1
        assert "no destination 'pcas'; the destinations are: mpi, pacs" in done.stderr
    store = open_store(db_url)
    assert "pcas" not in read_controls(store)


def test_resume_after_an_outage_sends_at_once_and_status_says_when_it_would_have(
    db_url: str, tmp_path: Path
) -> None:
    """The PACS was down: the worker waits out its back-off (here 60 s), and `queue status`
    says when it tries next. The PACS is back: `queue resume` sends at once."""
    pacs = FakeReceiver()
    port = pacs.port
    pacs.stop()
    with running_pipeline(
        db_url, tmp_path, port, retry_initial="60s", retry_max="5m", connect_timeout="1s"
    ) as engine:
        send_all(engine.port(), ["OUT1"])
        time.sleep(1.5)  # one failed attempt, then 60 s to wait
        status = subprocess.run(
            crosswalk("queue", "status", "--db", db_url),
            capture_output=True,
            text=True,
            env=cli_env(),
        )
        assert "next try" in status.stdout and "in 5" in status.stdout, status.stdout
        narrow = run_crosswalk("queue", "status", "--db", db_url, columns=60)
        assert narrow.returncode == 0, narrow.stderr
        assert_fits(narrow.stdout, 60, ["pacs", "active"])
        pacs = FakeReceiver(port)
        started = time.monotonic()
        subprocess.run(
            crosswalk("queue", "resume", "pacs", "--db", db_url),
            env=cli_env(),
            check=True,
            capture_output=True,
        )
        assert pacs.wait_for(1, timeout=10)
        assert time.monotonic() - started < 10, "not the 60 s back-off"
    pacs.stop()
