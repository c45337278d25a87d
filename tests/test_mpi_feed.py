"""The MPI kept from the ADT and order feeds, through a running engine."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.config.loader import load_config
from engine.hl7v2.ack import read_ack
from engine.mpi.queries import patients_with_identifier, search, view
from engine.mpi.tables import Order, Patient, PatientEvent
from engine.pipeline import mpi_destination as worker
from engine.store.database import open_store
from engine.store.queue import set_control
from engine.store.schema import Delivery, DeliveryState
from engine.testing import Peer
from tests.support import (  # noqa: F401  (store_mode: every test clear and encrypted)
    Pipeline,
    config_folder,
    hl7,
    run_crosswalk,
    store_mode,
)

MPI_ROUTE = "routes:\n  mpi:\n    source: ehr\n    destinations: [mpi]\n"
ENDPOINTS = "listeners:\n  ehr: {port: 0}\n"


def adt(
    trigger: str,
    control_id: str,
    pid: str,
    *,
    evn: str = "20261101080000",
    extra: tuple[str, ...] = (),
) -> bytes:
    return hl7(
        f"MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|{evn}||ADT^{trigger}|{control_id}|P|2.5.1",
        f"EVN|{trigger}|{evn}",
        pid,
        *extra,
    )


class Feed:
    """An engine whose only route feeds the MPI; send messages, wait, look."""

    def __init__(self, engine: Pipeline, db_url: str) -> None:
        self.engine = engine
        self.store = open_store(db_url)
        self.peer = Peer(engine.port())
        self.sent = 0

    def send(self, *payloads: bytes) -> None:
        for payload in payloads:
            assert read_ack(self.peer.exchange(payload)).code == "AA"
            self.sent += 1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with Session(self.store) as session:
                settled = session.scalar(
                    select(func.count(Delivery.id)).where(
                        Delivery.destination == "mpi", Delivery.state != DeliveryState.QUEUED
                    )
                )
            if settled >= self.sent:
                return
            time.sleep(0.02)
        raise AssertionError("the MPI did not apply the messages in time")

    def patient(self, value: str, authority: str = "GENHOSP"):  # type: ignore[no-untyped-def]
        (patient_id,) = patients_with_identifier(self.store, value, authority)
        found = view(self.store, patient_id)
        assert found is not None
        return found

    def last_delivery(self) -> Delivery:
        with Session(self.store) as session:
            return session.scalars(select(Delivery).order_by(Delivery.id.desc())).first()


@contextmanager
def mpi_feed(db_url: str, tmp_path: Path) -> Iterator[Feed]:
    folder = config_folder(tmp_path, MPI_ROUTE, endpoints=ENDPOINTS)
    engine = Pipeline(db_url, folder)
    engine.start()
    feed = Feed(engine, db_url)
    try:
        yield feed
    finally:
        feed.peer.close()
        engine.stop()


PID_SMITH = (
    "PID|1||100234^^^GENHOSP^MR~E445566^^^EPI^PI||SMITH^JOHN^Q||19800304|M|||"
    "12 MAIN ST^^SPRINGFIELD^IL^62701||(217)555-0100"
)


def test_a01_creates_and_a08_updates_with_history(db_url: str, tmp_path: Path) -> None:
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(adt("A01", "M1", PID_SMITH))
        smith = feed.patient("100234")
        assert (smith.patient.family_name, smith.patient.given_name) == ("SMITH", "JOHN")
        assert smith.patient.birth_date == "19800304" and smith.patient.sex == "M"
        assert smith.patient.city == "SPRINGFIELD" and smith.patient.postal_code == "62701"
        assert {(i.shown_value, i.authority) for i in smith.identifiers} == {
            ("100234", "GENHOSP"),
            ("E445566", "EPI"),
        }
        married = PID_SMITH.replace("SMITH^JOHN^Q", "JONES^JOHN^Q~SMITH^JOHN^^^^^M")
        feed.send(adt("A08", "M2", married, evn="20261102090000"))
        updated = feed.patient("E445566", "EPI")
        assert updated.patient.id == smith.patient.id
        assert updated.patient.family_name == "JONES"
        kinds = {(n.kind, n.family_name) for n in updated.names}
        assert ("previous", "SMITH") in kinds and ("maiden", "SMITH") in kinds
        assert [e.kind for e in updated.events] == ["created", "updated"]
        assert updated.events[0].message_id is not None
        assert search(feed.store, family="smi")[0].id == smith.patient.id  # via the old name


def test_messages_show_gives_the_mpis_answer_as_it_is(db_url: str, tmp_path: Path) -> None:
    """The MPI answers with a note, not an HL7 ACK: `messages show` prints the note."""
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(adt("A01", "M1", PID_SMITH))  # returns once the MPI has applied it
        delivery = feed.last_delivery()
    shown = run_crosswalk("messages", "show", str(delivery.message_id), "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    assert "not an HL7 acknowledgement" not in shown.stdout
    answer = next(line.strip() for line in shown.stdout.splitlines() if "answer:" in line)
    assert answer.startswith("answer: MPI: created patient ")


def test_an_older_update_arriving_late_is_not_applied(db_url: str, tmp_path: Path) -> None:
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(adt("A01", "O1", PID_SMITH, evn="20261101080000"))
        feed.send(
            adt("A08", "O2", PID_SMITH.replace("12 MAIN ST", "9 NEW RD"), evn="20261103080000")
        )
        feed.send(
            adt("A08", "O3", PID_SMITH.replace("12 MAIN ST", "1 OLD LN"), evn="20261102080000")
        )  # older than O2, arrives after it
        smith = feed.patient("100234")
        assert smith.patient.street == "9 NEW RD"
        assert [e.kind for e in smith.events] == ["created", "updated", "stale"]
        assert feed.last_delivery().state == DeliveryState.DELIVERED


def test_a40_merges_the_trauma_id_into_the_real_patient(db_url: str, tmp_path: Path) -> None:
    trauma = "PID|1||TR99001^^^GENHOSP^MR||DOE^JOHN||19900101|M"
    real = "PID|1||100745^^^GENHOSP^MR||WILLIAMS^JAMES||19810117|M"
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(adt("A04", "T1", trauma), adt("A04", "T2", real))
        merge = adt(
            "A40",
            "T3",
            real,
            evn="20261101100000",
            extra=("MRG|TR99001^^^GENHOSP^MR||||||DOE^JOHN",),
        )
        feed.send(merge)
        survivor = feed.patient("TR99001")  # the trauma id now points to the survivor
        assert survivor.patient.family_name == "WILLIAMS"
        assert {i.shown_value for i in survivor.identifiers} == {"100745", "TR99001"}
        assert ("merged", "DOE") in {(n.kind, n.family_name) for n in survivor.names}
        (merged,) = survivor.merged_in
        assert merged.family_name == "DOE" and merged.merged_into == survivor.patient.id
        assert "merged in" in survivor.events[-1].detail
        feed.send(merge.replace(b"|T3|", b"|T4|"))  # the same merge again: nothing to do
        assert b"already merged" in feed.last_delivery().ack


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        (
            (adt("A40", "E1", "PID|1||NOPE^^^GENHOSP^MR||X^Y", extra=("MRG|TR1^^^GENHOSP^MR",)),),
            "merge into an unknown patient",
        ),
        (
            (
                adt("A04", "E1", "PID|1||555^^^GENHOSP^MR||X^Y"),
                adt("A40", "E2", "PID|1||555^^^GENHOSP^MR||X^Y", extra=("MRG|555^^^GENHOSP^MR",)),
            ),
            "circular merge",
        ),
        (
            (
                adt("A04", "E1", "PID|1||555^^^GENHOSP^MR||X^Y"),
                adt("A04", "E2", "PID|1||777^^^GENHOSP^MR||Z^W"),
                adt("A47", "E3", "PID|1||777^^^GENHOSP^MR||X^Y", extra=("MRG|555^^^GENHOSP^MR",)),
            ),
            "the new identifier 777^^^GENHOSP already exists",
        ),
        (
            (
                adt("A04", "E1", "PID|1||555^^^GENHOSP^MR||X^Y"),
                adt("A04", "E2", "PID|1||777^^^GENHOSP^MR||Z^W"),
                adt("A08", "E3", "PID|1||555^^^GENHOSP^MR~777^^^GENHOSP^MR||X^Y"),
            ),
            "belong to different patients",
        ),
    ],
    ids=["merge-into-unknown", "circular", "a47-onto-existing", "ids-of-two-patients"],
)
def test_what_the_mpi_cannot_apply_is_kept_as_errored(
    db_url: str, tmp_path: Path, messages: tuple[bytes, ...], reason: str
) -> None:
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(*messages)
        last = feed.last_delivery()
        assert last.state == DeliveryState.ERRORED
        assert reason in last.last_error


def test_a_refused_message_in_a_batch_is_set_aside_and_the_rest_applied(
    db_url: str, tmp_path: Path
) -> None:
    with mpi_feed(db_url, tmp_path) as feed:
        set_control(feed.store, "mpi", paused=True, reason="test: build one batch")
        time.sleep(1.2)  # the worker sees the pause
        for n, payload in enumerate(
            (
                adt("A04", "B1", "PID|1||601^^^GENHOSP^MR||ONE^A"),
                adt("A40", "B2", "PID|1||602^^^GENHOSP^MR||X^Y", extra=("MRG|NOPE^^^GENHOSP",)),
                adt("A04", "B3", "PID|1||603^^^GENHOSP^MR||THREE^C"),
            )
        ):
            assert read_ack(feed.peer.exchange(payload)).code == "AA", n
        feed.sent += 3
        set_control(feed.store, "mpi", paused=False, reason="")
        feed.send()
        with Session(feed.store) as session:
            states = session.scalars(
                select(Delivery.state).where(Delivery.destination == "mpi").order_by(Delivery.id)
            ).all()
        assert states == ["delivered", "errored", "delivered"]
        assert feed.patient("601").patient.family_name == "ONE"
        assert feed.patient("603").patient.family_name == "THREE"


def test_a47_changes_an_identifier(db_url: str, tmp_path: Path) -> None:
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(adt("A04", "C1", "PID|1||100388^^^GENHOSP^MR||SMITH^ANN||19700101|F"))
        feed.send(
            adt(
                "A47",
                "C2",
                "PID|1||100839^^^GENHOSP^MR||SMITH^ANN",
                extra=("MRG|100388^^^GENHOSP^MR",),
            )
        )
        ann = feed.patient("100839")
        assert [i.shown_value for i in ann.identifiers] == ["100839"]
        assert patients_with_identifier(feed.store, "100388") == []
        assert ann.events[-1].kind == "identifier_changed"


def test_a37_unlinks_a_merge(db_url: str, tmp_path: Path) -> None:
    one = "PID|1||A1^^^GENHOSP^MR||ONE^X"
    two = "PID|1||B2^^^GENHOSP^MR||TWO^Y"
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(
            adt("A04", "U1", one),
            adt("A04", "U2", two),
            adt("A40", "U3", one, extra=("MRG|B2^^^GENHOSP^MR",)),
        )
        assert {i.shown_value for i in feed.patient("A1").identifiers} == {"A1", "B2"}
        feed.send(adt("A37", "U4", one, extra=(two.replace("PID|1", "PID|2"),)))
        assert {i.shown_value for i in feed.patient("A1").identifiers} == {"A1"}
        second = feed.patient("B2")
        assert second.patient.merged_into is None and second.events[-1].kind == "unlinked"


def test_orders_link_accession_numbers_to_patients(db_url: str, tmp_path: Path) -> None:
    orm = hl7(
        "MSH|^~\\&|RIS|GENHOSP|PACS|RAD|20261101||ORM^O01|R1|P|2.3.1",
        PID_SMITH,
        "ORC|NW|448812^EPIC|2026000123^RIS",
        "OBR|1|448812^EPIC|2026000123^RIS|CTCHEST^CT CHEST^LOCAL||||||||||||||ACC123",
    )
    omi = hl7(
        "MSH|^~\\&|RIS|GENHOSP|PACS|RAD|20261101||OMI^O23^OMI_O23|R2|P|2.5.1",
        PID_SMITH,
        "ORC|NW|448813^EPIC",
        "OBR|1|448813^EPIC||MRKNEEL^MR KNEE^LOCAL",
        "IPC|ACC124^GENHOSP|RP1|1.2.3",
    )
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(orm, omi, orm.replace(b"ORC|NW", b"ORC|CA").replace(b"|R1|", b"|R3|"))
        smith = feed.patient("100234")  # created from the order: the RIS knew them first
        assert [(o.accession, o.order_control) for o in smith.orders] == [
            ("ACC123", "CA"),
            ("ACC124", "NW"),
        ]
        with Session(feed.store) as session:
            assert session.scalars(select(Order.placer_number).order_by(Order.id)).all() == [
                "448812",
                "448813",
            ]


def test_the_mpi_ends_the_same_whatever_the_order(db_url: str, tmp_path: Path) -> None:
    """Deterministic by event time: shuffled updates give the same patient."""
    updates = [
        adt("A08", f"S{n}", PID_SMITH.replace("12 MAIN ST", f"{n} STREET"), evn=f"2026110{n}080000")
        for n in range(1, 6)
    ]
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(adt("A01", "S0", PID_SMITH, evn="20261101000000"))
        feed.send(*[updates[i] for i in (3, 0, 4, 2, 1)])
        assert feed.patient("100234").patient.street == "5 STREET"
        with Session(feed.store) as session:
            assert session.scalars(select(Patient.id)).all() == [feed.patient("100234").patient.id]


def send_in_one_batch(feed: Feed, *payloads: bytes) -> list[Delivery]:
    """Queue ``payloads`` while the MPI queue is paused, so the worker takes them as one batch;
    the ``mpi`` deliveries, in order, once all are settled."""
    set_control(feed.store, "mpi", paused=True, reason="test: build one batch")
    time.sleep(1.2)  # the worker sees the pause
    for n, payload in enumerate(payloads):
        assert read_ack(feed.peer.exchange(payload)).code == "AA", n
    feed.sent += len(payloads)
    set_control(feed.store, "mpi", paused=False, reason="")
    feed.send()
    with Session(feed.store) as session:
        return list(
            session.scalars(
                select(Delivery).where(Delivery.destination == "mpi").order_by(Delivery.id)
            )
        )


def test_an_over_long_name_or_address_is_cut_to_its_column(db_url: str, tmp_path: Path) -> None:
    """PostgreSQL refuses a value longer than its column (SQLite does not): the MPI cuts free
    text to fit, on both, and the queue goes on."""
    long_pid = (
        f"PID|1||100234^^^GENHOSP^MR||{'W' * 200}^{'G' * 150}~{'A' * 180}^B^^^^^A||19800304|M|||"
        f"{'S' * 250}^^SPRINGFIELD^IL^{'9' * 30}||{'5' * 60}"
    )
    with mpi_feed(db_url, tmp_path) as feed:
        feed.send(adt("A01", "L1", long_pid))
        created = feed.patient("100234").patient
        assert (created.family_name, created.given_name) == ("W" * 100, "G" * 100)
        assert (created.street, created.postal_code, created.phone) == (
            "S" * 200,
            "9" * 20,
            "5" * 50,
        )
        deliveries = send_in_one_batch(
            feed,
            adt("A08", "L2", PID_SMITH, evn="20261102080000"),
            adt("A08", "L3", long_pid, evn="20261103080000"),  # an update, not a creation
            adt("A04", "L4", "PID|1||100388^^^GENHOSP^MR||NEXT^ONE"),
        )
        assert [d.state for d in deliveries] == ["delivered"] * 4
        updated = feed.patient("100234")
        assert updated.patient.family_name == "W" * 100
        names = {(n.kind, n.family_name) for n in updated.names}
        assert ("alias", "A" * 100) in names and ("previous", "SMITH") in names
        assert [e.kind for e in updated.events] == ["created", "updated", "updated"]
        assert feed.patient("100388").patient.family_name == "NEXT"


ORDER_PID = "PID|1||100234^^^GENHOSP^MR||SMITH^JOHN"


def order(control_id: str, accession: str) -> bytes:
    return hl7(
        f"MSH|^~\\&|RIS|GENHOSP|PACS|RAD|20261101||ORM^O01|{control_id}|P|2.3.1",
        ORDER_PID,
        "ORC|NW|448812^EPIC|2026000123^RIS",
        f"OBR|1|448812^EPIC|2026000123^RIS|CTCHEST^CT CHEST^LOCAL||||||||||||||{accession}",
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            adt("A01", "X1", f"PID|1||{'7' * 101}^^^GENHOSP^MR||LONG^ID"),
            "PID-3.1 is longer than 100 characters",
        ),
        (
            adt("A01", "X1", f"PID|1||702^^^GENHOSP^MR~703^^^{'H' * 101}^PI||LONG^AUTHORITY"),
            "PID-3[2].4 is longer than 100 characters",
        ),
        (
            adt("A01", "X1", "PID|1||702^^^GENHOSP^MR||SM\x00ITH^JOHN"),
            "PID-5.1 holds a NUL character (0x00)",
        ),
        (
            adt("A01", "X1", "PID|1||702^^^GENHOSP^MR||SM\\X00\\ITH^JOHN"),
            "PID-5.1 holds a NUL character (0x00)",
        ),
        (
            adt("A01", "X1", "PID|1||702^^^GENHOSP^MR||SMITH^JO\x00HN"),
            "PID-5.2 holds a NUL character (0x00)",
        ),
        (
            adt("A40", "X1", "PID|1||601^^^GENHOSP^MR||ONE^A", extra=(f"MRG|{'8' * 101}",)),
            "MRG-1.1 is longer than 100 characters",
        ),
        (order("X1", "A" * 65), "OBR-18 is longer than 64 characters"),
    ],
    ids=[
        "long-id",
        "long-authority",
        "nul-family",
        "escaped-nul",
        "nul-given",
        "long-mrg",
        "order",
    ],
)
def test_an_over_long_identifier_or_a_nul_sets_the_message_aside(
    db_url: str, tmp_path: Path, payload: bytes, reason: str
) -> None:
    """Refused alike on SQLite and PostgreSQL, with a reason naming the field, never the value;
    the messages around it in the same batch are applied."""
    with mpi_feed(db_url, tmp_path) as feed:
        deliveries = send_in_one_batch(
            feed,
            adt("A04", "B1", "PID|1||601^^^GENHOSP^MR||ONE^A"),
            payload,
            adt("A04", "B3", "PID|1||603^^^GENHOSP^MR||THREE^C"),
        )
        assert [d.state for d in deliveries] == ["delivered", "errored", "delivered"]
        assert deliveries[1].last_error == reason  # the field, never the value (PHI)
        assert patients_with_identifier(feed.store, "702") == []
        assert feed.patient("601").patient.merged_into is None
        assert feed.patient("603").patient.family_name == "THREE"
        with Session(feed.store) as session:
            assert session.scalar(select(func.count(Order.id))) == 0


def test_an_unexpected_error_sets_only_its_message_aside(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug met by one message (here an exception quoting patient data) sets that message
    aside with the kind of error, logs where without the values, and the queue goes on."""
    caplog.set_level(logging.INFO)
    real = worker._applied

    def buggy(records, delivery, codecs):  # type: ignore[no-untyped-def]
        if delivery.control_id == "BUG":
            raise KeyError(delivery.payload.split(b"|")[-1].split(b"^")[0].decode())
        return real(records, delivery, codecs)

    monkeypatch.setattr(worker, "_applied", buggy)
    with mpi_feed(db_url, tmp_path) as feed:
        deliveries = send_in_one_batch(
            feed,
            adt("A04", "B1", "PID|1||601^^^GENHOSP^MR||ONE^A"),
            adt("A04", "BUG", "PID|1||602^^^GENHOSP^MR||ZEBULON^Q"),
            adt("A04", "B3", "PID|1||603^^^GENHOSP^MR||THREE^C"),
        )
        assert [d.state for d in deliveries] == ["delivered", "errored", "delivered"]
        assert deliveries[1].last_error == (
            "the MPI could not apply this message: an unexpected KeyError"
        )
        assert patients_with_identifier(feed.store, "602") == []
        assert feed.patient("603").patient.family_name == "THREE"
    logged = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any("control_id=BUG" in r.getMessage() for r in logged)
    assert not any("ZEBULON" in r.getMessage() or r.exc_info for r in logged)


def test_a_failing_store_sets_nothing_aside_and_the_batch_is_retried(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An OperationalError (a lost connection, a locked or full database) is the store's, not
    the message's: the batch fails whole and is applied again once the store is back."""
    real = worker._applied
    failures: list[str] = []

    with mpi_feed(db_url, tmp_path) as feed:
        dbapi = feed.store.dialect.loaded_dbapi

        def flaky(records, delivery, codecs):  # type: ignore[no-untyped-def]
            if len(failures) < 2:
                failures.append(delivery.control_id)
                raise dbapi.OperationalError("the server closed the connection")
            return real(records, delivery, codecs)

        monkeypatch.setattr(worker, "_applied", flaky)
        deliveries = send_in_one_batch(
            feed,
            adt("A04", "F1", "PID|1||601^^^GENHOSP^MR||ONE^A"),
            adt("A04", "F2", "PID|1||602^^^GENHOSP^MR||TWO^B"),
        )
        assert failures == ["F1", "F1"]  # the batch failed twice, then was applied
        assert [d.state for d in deliveries] == ["delivered", "delivered"]
        assert feed.patient("602").patient.family_name == "TWO"
    assert "MPI: a batch could not be applied (OperationalError)" in caplog.text


@pytest.mark.parametrize(("failures", "state"), [(1, "delivered"), (2, "errored")])
def test_an_integrity_error_is_tried_once_more_then_set_aside(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, state: str
) -> None:
    """A unique identifier another writer (an `mpi import`) committed a moment before: applied
    again, the message finds it. An IntegrityError that stays sets the message aside."""
    real = worker._applied
    raised: list[str] = []

    with mpi_feed(db_url, tmp_path) as feed:
        dbapi = feed.store.dialect.loaded_dbapi

        def clashing(records, delivery, codecs):  # type: ignore[no-untyped-def]
            control_id = delivery.control_id
            if control_id == "I2" and raised.count(control_id) < failures + 1:
                raised.append(control_id)  # + 1: the first pass over the whole batch
                raise dbapi.IntegrityError("duplicate key value violates unique constraint")
            return real(records, delivery, codecs)

        monkeypatch.setattr(worker, "_applied", clashing)
        deliveries = send_in_one_batch(
            feed,
            adt("A04", "I1", "PID|1||601^^^GENHOSP^MR||ONE^A"),
            adt("A04", "I2", "PID|1||602^^^GENHOSP^MR||TWO^B"),
            adt("A04", "I3", "PID|1||603^^^GENHOSP^MR||THREE^C"),
        )
        assert [d.state for d in deliveries] == ["delivered", state, "delivered"]
        if state == "errored":
            assert deliveries[1].last_error == (
                "the MPI could not store this message: IntegrityError"
            )
        else:
            assert feed.patient("602").patient.family_name == "TWO"


def test_a_delivery_settled_by_an_earlier_commit_is_not_applied_again(
    db_url: str, tmp_path: Path
) -> None:
    """A batch whose commit went through but whose answer was lost (a server that stopped
    answering) is retried by the worker: what is settled already is not applied twice."""
    from sqlalchemy import update

    with mpi_feed(db_url, tmp_path) as feed:
        set_control(feed.store, "mpi", paused=True, reason="test: hold the queue")
        time.sleep(1.2)
        for control_id in ("E1", "E2"):
            assert read_ack(feed.peer.exchange(adt("A01", control_id, PID_SMITH))).code == "AA"
        feed.sent += 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # both routed to the (paused) mpi queue
            with Session(feed.store) as session:
                if session.scalar(select(func.count(Delivery.id))) == 2:
                    break
            time.sleep(0.02)
        with feed.store.begin() as connection:  # E1's batch "committed" before the answer
            first = connection.execute(
                select(func.min(Delivery.id)).where(Delivery.destination == "mpi")
            ).scalar()
            connection.execute(
                update(Delivery)
                .where(Delivery.id == first)
                .values(state=DeliveryState.DELIVERED, ack=b"MPI: created patient 1")
            )
        set_control(feed.store, "mpi", paused=False, reason="")
        feed.send()
        with Session(feed.store) as session:
            deliveries = session.scalars(
                select(Delivery).where(Delivery.destination == "mpi").order_by(Delivery.id)
            ).all()
            events = session.scalars(select(PatientEvent.message_id)).all()
    assert deliveries[0].ack == b"MPI: created patient 1", "left as it was"
    assert deliveries[0].message_id not in events
    assert deliveries[1].message_id in events


def test_registrations_are_read_in_routing_orders_and_merges_by_the_worker(
    tmp_path: Path,
) -> None:
    """The routing process reads what an A01/A08 tells the MPI (its worker then needs no parse
    on the engine's event loop); merges, orders and what the MPI refuses are left to the worker,
    which reads them itself and records why it refuses."""
    from engine.mpi.feed import Registration
    from engine.pipeline.routing_process import route_batch
    from engine.routes.router import Router
    from engine.store.received import AcceptedMessage

    router = Router(load_config(config_folder(tmp_path, MPI_ROUTE, endpoints=ENDPOINTS), {}))
    messages = [
        adt("A08", "R1", PID_SMITH),
        adt("A40", "R2", PID_SMITH, extra=("MRG|T999^^^GENHOSP^MR",)),
        hl7("MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|20261101||ADT^A08|R3|P|2.5.1"),  # refused: no PID
        hl7(
            "MSH|^~\\&|RIS|GENHOSP|PACS|RAD|20261101||ORM^O01|R4|P|2.5.1",
            PID_SMITH,
            "ORC|NW|448812|||||||20261101",
        ),
        adt("A08", "R5", PID_SMITH.replace("SMITH^JOHN", "SM\\E\\ITH^JOHN")),
    ]
    batch = [AcceptedMessage(n, m, "UNICODE UTF-8", "ehr") for n, m in enumerate(messages, 1)]
    routed = route_batch(router, batch)
    prepared = [m.deliveries[0]["prepared"] for m in routed.routed]
    # As the routing process sends them to the engine: pickled (as constructor arguments).
    sent = pickle.loads(pickle.dumps(routed, pickle.HIGHEST_PROTOCOL))
    assert [m.deliveries[0]["prepared"] for m in sent.routed] == prepared
    first, merge, refused, order, escaped = prepared
    assert isinstance(first, Registration) and first.trigger == "A08"
    assert first.when == "20261101080000.000000"
    assert first.demographics.name.family == "SMITH"
    assert {(i.value, i.authority) for i in first.demographics.identifiers} == {
        ("100234", "GENHOSP"),
        ("E445566", "EPI"),
    }
    assert merge is None and refused is None and order is None
    assert isinstance(escaped, Registration)
    assert escaped.demographics.name.family == "SM\\ITH"


def test_deliveries_read_back_from_the_store_give_the_same_mpi(tmp_path: Path) -> None:
    """A registration read in the routing process and one the worker reads from a delivery
    loaded back from the store (after a restart) change the MPI alike."""
    feed_day = (Path(__file__).parent.parent / "samples" / "feed_day.hl7").read_text()
    payloads = [hl7(*block.splitlines()) for block in feed_day.split("\n\n") if block.strip()]

    def mpi(store_url: str) -> list[tuple[object, ...]]:
        store = open_store(store_url)
        with Session(store) as session:
            patients = [
                (p.id, p.family_name, p.given_name, p.birth_date, p.street, p.merged_into)
                for p in session.scalars(select(Patient).order_by(Patient.id))
            ]
            events = session.execute(
                select(
                    PatientEvent.patient_id,
                    PatientEvent.kind,
                    PatientEvent.event_time,
                    PatientEvent.message_id,
                    PatientEvent.detail,
                ).order_by(PatientEvent.id)
            ).all()
        store.dispose()
        return [*patients, *map(tuple, events)]

    for folder in ("live", "held", "restarted"):
        (tmp_path / folder).mkdir()
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    with mpi_feed(live_url, tmp_path / "live") as feed:  # prepared in routing
        feed.send(*payloads)
    live = mpi(live_url)
    assert len(live) > len(payloads)
    url = f"sqlite:///{tmp_path / 'held.db'}"
    with mpi_feed(url, tmp_path / "held") as feed:
        set_control(feed.store, "mpi", paused=True, reason="test: hold the queue")
        time.sleep(1.2)  # the worker sees the pause
        for payload in payloads:
            assert read_ack(feed.peer.exchange(payload)).code == "AA"
        feed.sent = len(payloads)
    with mpi_feed(url, tmp_path / "restarted") as feed:  # read back: nothing prepared
        feed.sent = len(payloads)
        set_control(feed.store, "mpi", paused=False, reason="")
        feed.send()
    assert mpi(url) == live
