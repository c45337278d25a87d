"""The audit trail: every operator action and PHI display recorded, no PHI in it, a hash chain
that names tampered rows, one chain under concurrent writers, and the syslog export."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from engine.audit import actions
from engine.audit.settings import SyslogSettings
from engine.audit.syslog import SyslogExport, frame, message
from engine.audit.tables import AuditEvent, Outcome
from engine.audit.trail import (
    ENGINE_ACTOR,
    GENESIS,
    Actor,
    AuditRecord,
    EventFilter,
    Trail,
    digest,
    events,
)
from engine.audit.verify import verify
from engine.reconcile.tables import Proposal
from engine.store.schema import table_of
from tests.certificates import Authority
from tests.support import Pipeline, cli_env, config_folder, crosswalk, destination_yaml
from tests.support import run_crosswalk as run
from tests.test_reconcile import MPI, MPI_HEADER, STUDY_HEADER, write
from tests.test_review import MERGES, REVIEW, STUDIES

_events = table_of(AuditEvent)

PHI = [
    # The sample patients' names, birth dates (both spellings) and MRNs.
    *("SMITH", "WILLIAM", "KOWALSKI", "TERESA", "OKAFOR", "NGUYEN", "BRENNAN", "PATRICK"),
    *("1958-03-14", "19580314", "1954-11-03", "19541103", "1949-02-27", "19490227"),
    *("100234", "100388", "100700", "X77", "X78", "X79"),
]


def audit_rows(store: Engine, **wanted: object) -> list[AuditRecord]:
    with store.connect() as connection:
        return events(connection, EventFilter(**wanted))  # type: ignore[arg-type]


def one(store: Engine, action: str, **expected: object) -> AuditRecord:
    """The only event of ``action`` (whose fields are as ``expected``)."""
    found = audit_rows(store, action=action)
    assert len(found) == 1, (action, found)
    for name, value in expected.items():
        assert getattr(found[0], name) == value, (action, name, found[0])
    return found[0]


def proposal_for(store: Engine, uid: str) -> int:
    with store.connect() as connection:
        return int(
            connection.execute(
                select(Proposal.id).where(Proposal.study_uid == uid).order_by(Proposal.rank)
            ).scalar_one()
        )


def routes(tmp_path: Path, audit: str = "") -> Path:
    """A configuration folder: merges route to a PACS that is not there, review settings, and
    an ``audit:`` section when given."""
    # Small data: no EM (the starting m), as in the reconciler's tests.
    extra = {"review.yaml": REVIEW, "reconciler.yaml": "reconciler:\n  min_em_pairs: 1000000000\n"}
    if audit:
        extra["audit.yaml"] = audit
    return config_folder(tmp_path, MERGES, endpoints=destination_yaml(9), extra=extra)


def test_every_command_records_who_what_and_outcome_and_never_phi(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    folder = routes(tmp_path)
    db = ["--db", db_url]
    cfg = ["--config", str(folder), *db]
    mpi = write(tmp_path / "mpi.csv", MPI_HEADER, MPI)
    studies = write(tmp_path / "studies.csv", STUDY_HEADER, STUDIES)

    def ok(*args: str, code: int = 0, stdin: str | None = None) -> str:
        result = subprocess.run(
            crosswalk(*args), input=stdin, capture_output=True, text=True, env=cli_env(), timeout=60
        )
        assert result.returncode == code, (args, result.stdout, result.stderr)
        return result.stdout

    ok("mpi", "import", str(mpi), *db)
    ok("studies", "import", str(studies), *cfg)
    ok("reconcile", "run", *cfg)
    first, second, third = (proposal_for(store, uid) for uid in ("1.2", "1.1", "1.3"))
    ok("review", "list", *cfg)
    ok("review", "show", str(first), *cfg)
    ok("review", "show", "999", *cfg, code=1)
    ok("review", "approve", str(first), "--user", "alice", "--reason", "same DOB", *cfg)
    ok("review", "approve", str(first), "--user", "alice", *cfg, code=1)
    ok("review", "reject", str(second), "--reason", "twin: other name", "--user", "bob", *cfg)
    ok("review", "defer", str(third), "--user", "carol", *cfg)
    ok("review", "next", "--include-deferred", "--user", "dave", *cfg, stdin="s\n")
    ok("review", "audit", "--format", "json", *db)
    ok("review", "export-was-is", str(tmp_path / "was-is.csv"), *db)
    ok("reconcile", "export", "--out", str(tmp_path / "proposals.csv"), *db)
    ok("messages", "list", *db)
    ok("messages", "search", "KOWALSKI", *db)
    merge = audit_rows(store, action=actions.REVIEW_APPROVE, outcome=Outcome.OK)[0].objects[1]
    assert merge.startswith("message:")
    message_id = merge.split(":")[1]
    ok("messages", "show", message_id, *db)
    ok("messages", "show", "999", *db, code=2)
    ok("messages", "resend", message_id, *cfg)
    ok("queue", "pause", "pacs", "--reason", "maintenance", *db)
    ok("queue", "resume", "pacs", *db)
    ok("queue", "retry", "pacs", *db)
    ok("mpi", "show", "100388", *db)
    ok("mpi", "search", "--name", "KOWALSKI", "--birth-date", "1954-11-03", *db)
    ok("studies", "orphans", *cfg)
    ok("audit", "list", "--user", "alice", *db)

    me = Actor.current()
    imported = one(store, actions.MPI_IMPORT, outcome=Outcome.OK, actor=me.os_user)
    assert imported.os_user == me.os_user and imported.host == me.host
    assert imported.objects == (f"file:{mpi}",) and "6 row(s)" in imported.detail
    one(store, actions.STUDIES_IMPORT, outcome=Outcome.OK)
    assert one(store, actions.RECONCILE_RUN).objects[0].startswith("run:")
    assert f"proposal:{first}" in one(store, actions.REVIEW_LIST).objects
    shown = audit_rows(store, action=actions.REVIEW_SHOW)
    assert [(e.objects, e.outcome, e.detail) for e in shown] == [
        ((f"proposal:{first}",), Outcome.OK, ""),
        (("proposal:999",), Outcome.REFUSED, "no such proposal"),
    ]
    approved, again = audit_rows(store, action=actions.REVIEW_APPROVE)
    assert (approved.actor, approved.outcome) == ("alice", Outcome.OK)
    assert approved.objects[0] == f"proposal:{first}" and approved.os_user == me.os_user
    assert (again.outcome, again.detail) == (Outcome.REFUSED, f"proposal {first} is approved")
    one(store, actions.REVIEW_REJECT, actor="bob", objects=(f"proposal:{second}",))
    one(store, actions.REVIEW_DEFER, actor="carol", objects=(f"proposal:{third}",))
    assert f"proposal:{third}" in {
        o for e in audit_rows(store, action=actions.REVIEW_NEXT, user="dave") for o in e.objects
    }
    one(store, actions.REVIEW_AUDIT, criteria={"format": "json"})
    one(store, actions.REVIEW_WAS_IS, detail="1 approval(s)")
    assert f"proposal:{first}" in one(store, actions.RECONCILE_EXPORT).objects
    assert merge in one(store, actions.MESSAGES_LIST).objects
    searched = one(store, actions.MESSAGES_SEARCH, criteria={"limit": "50", "text": "(given)"})
    assert merge in searched.objects
    assert [(e.objects, e.outcome) for e in audit_rows(store, action=actions.MESSAGES_SHOW)] == [
        ((merge,), Outcome.OK),
        (("message:999",), Outcome.REFUSED),
    ]
    one(store, actions.MESSAGES_RESEND, objects=(merge,), outcome=Outcome.OK)
    for action in (actions.QUEUE_PAUSE, actions.QUEUE_RESUME, actions.QUEUE_RETRY):
        one(store, action, objects=("destination:pacs",), outcome=Outcome.OK)
    patient = one(store, actions.MPI_SHOW, criteria={"identifier": "(given)"})
    assert len(patient.objects) == 1 and patient.objects[0].startswith("patient:")
    one(
        store,
        actions.MPI_SEARCH,
        criteria={"birth_date": "(given)", "limit": "50", "name": "(given)"},
    )
    assert "orphaned" in one(store, actions.STUDIES_ORPHANS).detail
    one(store, actions.AUDIT_LIST, criteria={"format": "table", "user": "alice"})

    # No PHI anywhere in the trail: names, birth dates, MRNs, the search texts.
    with store.connect() as connection:
        stored = [dict(row) for row in connection.execute(select(_events)).mappings()]
    text = json.dumps(
        [{k: v for k, v in row.items() if "hash" not in k} for row in stored], default=str
    ).upper()
    for value in PHI:
        assert value not in text, value
    assert verify_cli(db_url).returncode == 0


def verify_cli(db_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("audit", "verify", "--db", db_url, *extra)


def recorded(store: Engine, count: int, who: str = "erin") -> list[AuditRecord]:
    trail = Trail(store, Actor.current(who))
    return [trail.record(actions.QUEUE_PAUSE, objects=[f"destination:d{n}"]) for n in range(count)]


def test_the_chain_links_every_row_to_the_one_before(store: Engine) -> None:
    found = recorded(store, 3)
    assert [r.id for r in found] == [1, 2, 3]
    assert found[0].previous_hash == GENESIS
    assert [r.previous_hash for r in found[1:]] == [r.hash for r in found[:2]]
    assert audit_rows(store) == found
    with store.connect() as connection:
        rows = connection.execute(select(_events).order_by(_events.c.id)).mappings().all()
    assert [digest(dict(row)) for row in rows] == [r.hash for r in found]
    with store.connect() as connection:
        result = verify(connection)
    assert result.intact and (result.rows, result.last_id) == (3, 3)


def test_verify_names_a_row_changed_behind_the_engines_back(store: Engine, db_url: str) -> None:
    recorded(store, 5)
    assert verify_cli(db_url).returncode == 0
    with store.begin() as connection:
        connection.execute(update(_events).where(_events.c.id == 3).values(actor="mallory"))
    result = verify_cli(db_url)
    assert result.returncode == 1
    assert "row 3: changed: its content does not give its hash" in result.stdout
    assert "row 4" not in result.stdout  # the chain goes on from the hash row 4 recorded


def test_verify_names_a_changed_row_whose_hash_was_recomputed(store: Engine, db_url: str) -> None:
    recorded(store, 5)
    with store.begin() as connection:
        row = dict(connection.execute(select(_events).where(_events.c.id == 2)).mappings().one())
        row["detail"] = "nothing happened"
        connection.execute(
            update(_events).where(_events.c.id == 2).values(detail=row["detail"], hash=digest(row))
        )
    result = verify_cli(db_url)
    assert result.returncode == 1
    assert "row 2: changed: its hash is not the one row 3 recorded" in result.stdout


def test_verify_names_a_removed_row(store: Engine, db_url: str) -> None:
    recorded(store, 5)
    with store.begin() as connection:
        connection.execute(delete(_events).where(_events.c.id == 3))
    result = verify_cli(db_url)
    assert result.returncode == 1
    assert "row 3: removed (missing before row 4)" in result.stdout
    # Rows cut off the end leave no gap: the anchor noted earlier catches them.
    last = audit_rows(store)[-1]
    with store.begin() as connection:
        connection.execute(delete(_events).where(_events.c.id == last.id))
    anchored = verify_cli(db_url, "--anchor", f"{last.id}:{last.hash}")
    assert anchored.returncode == 1
    assert f"row {last.id}: removed: the anchor given is no longer in the trail" in anchored.stdout


def test_verify_names_a_removed_row_whose_gap_was_closed(store: Engine) -> None:
    recorded(store, 5)
    with store.begin() as connection:
        connection.execute(delete(_events).where(_events.c.id == 3))
        connection.execute(update(_events).where(_events.c.id > 3).values(id=_events.c.id - 1))
    with store.connect() as connection:
        findings = [str(f) for f in verify(connection).findings]
    assert findings == [
        "row 3: removed, and the later rows renumbered to close the gap (row 3 now holds"
        " row 4's content)",
        "row 4: renumbered: its content was row 5's",
    ]


def forged(previous: AuditRecord, row_id: int) -> dict[str, object]:
    """A row as someone who knows the format would write it, hash and link included."""
    values: dict[str, object] = {
        "id": row_id,
        "recorded_at": datetime.now(UTC),
        "actor": "mallory",
        "os_user": "mallory",
        "host": "elsewhere",
        "terminal": "",
        "remote_address": "",
        "action": actions.QUEUE_RESUME,
        "objects": '["destination:pacs"]',
        "criteria": "{}",
        "outcome": Outcome.OK,
        "detail": "",
        "previous_hash": previous.hash,
    }
    values["hash"] = digest(values)
    return values


def test_verify_names_a_row_inserted_between_two_others(store: Engine, db_url: str) -> None:
    rows = recorded(store, 5)
    with store.begin() as connection:
        # Ids count without gaps: to fit a row after row 2, the later ones move up one.
        connection.execute(update(_events).where(_events.c.id > 2).values(id=_events.c.id + 100))
        connection.execute(update(_events).where(_events.c.id > 100).values(id=_events.c.id - 99))
        connection.execute(insert(_events).values(forged(rows[1], 3)))
    result = verify_cli(db_url)
    assert result.returncode == 1
    assert result.stdout.splitlines()[:4] == [
        "row 3: inserted: row 4 links past it to row 2",
        "row 4: renumbered: its content was row 3's",
        "row 5: renumbered: its content was row 4's",
        "row 6: renumbered: its content was row 5's",
    ]


def test_verify_names_a_row_appended_out_of_turn(store: Engine, db_url: str) -> None:
    rows = recorded(store, 3)
    with store.begin() as connection:
        connection.execute(insert(_events).values(forged(rows[-1], 9)))
    result = verify_cli(db_url)
    assert result.returncode == 1
    assert "row 9: inserted: it links to row 3 but does not follow it" in result.stdout


RECORDER = """
import sys
from engine.audit.trail import Actor, Trail
from engine.store.database import open_store

trail = Trail(open_store(sys.argv[1]), Actor.current(sys.argv[2]))
for n in range(int(sys.argv[3])):
    trail.record("queue.pause", objects=[f"destination:d{n}"])
"""


def test_two_processes_recording_at_once_keep_one_chain(store: Engine, db_url: str) -> None:
    count = 40
    writers = [
        subprocess.Popen([sys.executable, "-c", RECORDER, db_url, who, str(count)])
        for who in ("process-a", "process-b")
    ]
    assert [w.wait(120) for w in writers] == [0, 0]
    stored = audit_rows(store)
    assert [r.id for r in stored] == list(range(1, 2 * count + 1))
    assert {r.actor for r in stored} == {"process-a", "process-b"}
    with store.connect() as connection:
        assert verify(connection).intact


def test_audit_list_filters_and_formats(store: Engine, db_url: str) -> None:
    trail = Trail(store, Actor("alice", "alice", "ws1"))
    trail.record(actions.MESSAGES_SHOW, objects=["message:12"])
    trail.record(actions.MESSAGES_SHOW, objects=["message:120"], outcome=Outcome.REFUSED)
    Trail(store, Actor("bob", "root", "ws2", "/dev/pts/3", "10.0.0.9")).record(
        actions.REVIEW_APPROVE, objects=["proposal:12", "message:7"]
    )
    db = ["--db", db_url]

    def listed(*args: str) -> list[dict[str, object]]:
        result = run("audit", "list", "--format", "json", *args, *db)
        assert result.returncode == 0, result.stderr
        return [e for e in json.loads(result.stdout) if e["action"] != actions.AUDIT_LIST]

    assert [e["id"] for e in listed("--object", "message:12")] == [1]
    assert [e["id"] for e in listed("--object", "12")] == [1, 3]
    assert [e["id"] for e in listed("--object", "message")] == [1, 2, 3]
    assert [e["id"] for e in listed("--user", "root")] == [3]  # the OS account counts too
    assert [e["id"] for e in listed("--action", "review")] == [3]
    assert [e["id"] for e in listed("--outcome", "refused")] == [2]
    assert listed("--since", "1h", "--user", "bob")[0]["remote_address"] == "10.0.0.9"
    assert listed("--until", "2020-01-01") == []
    csv_out = run("audit", "list", "--format", "csv", "--user", "bob", *db).stdout.splitlines()
    assert csv_out[0].startswith("id,recorded_at,actor,os_user,host,terminal,remote_address")
    assert "proposal:12 message:7" in csv_out[1]
    table = run("audit", "list", *db).stdout
    assert "review.approve" in table and "bob (root)" in table


def test_a_command_whose_event_cannot_be_stored_says_so(store: Engine, db_url: str) -> None:
    _events.drop(store)
    result = run("queue", "pause", "pacs", "--db", db_url)
    assert result.returncode == 2
    assert "the audit event of this command could not be recorded" in result.stderr
    assert "Traceback" not in result.stderr


def test_where_a_command_was_run_from(store: Engine, db_url: str) -> None:
    result = subprocess.run(
        crosswalk("queue", "pause", "pacs", "--db", db_url),
        capture_output=True,
        text=True,
        env=cli_env(SSH_CLIENT="10.20.30.40 51234 22"),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    event = one(store, actions.QUEUE_PAUSE)
    assert event.remote_address == "10.20.30.40" and event.host == socket.gethostname()


# --- the syslog export -------------------------------------------------------------------------


class Collector:
    """A syslog collector on loopback (TCP, or TLS with ``context``): every connection's bytes."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.streams: list[bytes] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        data = b""
        try:
            connection.settimeout(10)
            if self.context is not None:
                connection = self.context.wrap_socket(connection, server_side=True)
            while chunk := connection.recv(65536):
                data += chunk
        except OSError as error:
            self.failures.append(repr(error))
        finally:
            connection.close()
        with self._lock:
            self.streams.append(data)

    def messages(self, count: int, timeout: float = 10) -> list[bytes]:
        """The first ``count`` messages received, their octet-count framing checked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [m for stream in self.streams for m in unframe(stream)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{len(found)} syslog message(s) received, expected {count}")

    def close(self) -> None:
        self.server.close()


def unframe(stream: bytes) -> Iterator[bytes]:
    """RFC 6587 octet counting: ``LENGTH SP MESSAGE``…"""
    while stream:
        length, space, rest = stream.partition(b" ")
        assert space and length.isdigit(), stream[:40]
        size = int(length)
        assert len(rest) >= size, "a frame shorter than its count"
        yield rest[:size]
        stream = rest[size:]


def parse(raw: bytes) -> tuple[list[str], dict[str, object]]:
    """An RFC 5424 message: its header fields (PRI+VERSION … SD) and the JSON MSG."""
    text = raw.decode("utf-8")
    header = text.split(" ", 6)
    structured, _, body = header[6].partition(" ")
    assert body.startswith("\ufeff")
    return [*header[:6], structured], json.loads(body[1:])


def check_message(raw: bytes, stored: AuditRecord) -> None:
    (pri_version, timestamp, host, app, procid, msgid, structured), body = parse(raw)
    severity = {Outcome.OK: 5, Outcome.REFUSED: 4, Outcome.ERROR: 3}[stored.outcome]
    assert pri_version == f"<{10 * 8 + severity}>1"  # authpriv; notice, warning or error
    assert datetime.fromisoformat(timestamp.replace("Z", "+00:00")) == stored.recorded_at
    assert (host, app, msgid, structured) == (stored.host, "crosswalk", stored.action, "-")
    assert procid.isdigit()
    assert body == stored.as_dict()


def syslog_yaml(port: int, protocol: str = "tcp", tls: str = "") -> str:
    text = f"audit:\n  syslog:\n    host: 127.0.0.1\n    port: {port}\n    protocol: {protocol}\n"
    return text + (f"    tls: {tls}\n" if tls else "")


def test_each_event_reaches_a_syslog_collector_over_tcp(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    collector = Collector()
    try:
        folder = routes(tmp_path, syslog_yaml(collector.port))
        db = ["--db", db_url]
        assert run("review", "list", "--config", str(folder), *db).returncode == 0
        # A command without --config reads the audit: section of ./routes.
        paused = subprocess.run(
            crosswalk("queue", "pause", "pacs", *db),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
        )
        assert paused.returncode == 0, paused.stderr
        received = collector.messages(2)
    finally:
        collector.close()
    listed, pause = audit_rows(store)
    check_message(received[0], listed)
    check_message(received[1], pause)
    assert not collector.failures


def test_each_event_reaches_a_syslog_collector_over_mutual_tls(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.issue("audit.hospital.test")
    client = ca.issue("crosswalk", server=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    context.load_verify_locations(ca.cert)
    context.verify_mode = ssl.CERT_REQUIRED
    collector = Collector(context)
    try:
        tls = f"{{ca: {ca.cert}, cert: {client.cert}, key: {client.key}}}"
        folder = routes(tmp_path, syslog_yaml(collector.port, "tls", tls))
        result = run("review", "show", "7", "--config", str(folder), "--db", db_url)
        assert result.returncode == 1  # no such proposal: recorded as refused, and sent
        (received,) = collector.messages(1)
    finally:
        collector.close()
    stored = one(store, actions.REVIEW_SHOW, outcome=Outcome.REFUSED)
    check_message(received, stored)
    assert parse(received)[0][0] == "<84>1"  # warning


def test_a_collector_that_is_down_never_fails_a_command(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    folder = routes(tmp_path, syslog_yaml(port))
    started = time.monotonic()
    result = run("review", "list", "--config", str(folder), "--db", db_url)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert f"the syslog collector 127.0.0.1:{port} cannot be reached" in result.stderr
    one(store, actions.REVIEW_LIST, outcome=Outcome.OK)  # the event is in the store


def test_an_unreachable_collector_is_warned_about_once_and_counted(
    store: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    export = SyslogExport(SyslogSettings(host="127.0.0.1", port=port, protocol="tcp"))
    trail = Trail(store, Actor.current(), export)
    for _ in range(3):
        trail.record(actions.AUDIT_LIST)
    assert (export.sent, export.failures) == (0, 3)
    warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert len(audit_rows(store)) == 3


def test_the_rfc5424_message_and_its_framing() -> None:
    event = AuditRecord(
        id=7,
        recorded_at=datetime(2026, 12, 4, 10, 11, 12, 345678, tzinfo=UTC),
        actor="jdoe",
        os_user="jdoe",
        host="pacs gw",
        terminal="/dev/pts/1",
        remote_address="",
        action="review.approve",
        objects=("proposal:42",),
        criteria={},
        outcome=Outcome.ERROR,
        detail="",
        previous_hash=GENESIS,
        hash="ab" * 32,
    )
    raw = message(event, app_name="crosswalk", facility=13, procid=4711)
    assert raw.startswith(
        b"<107>1 2026-12-04T10:11:12.345678Z pacs_gw crosswalk 4711 review.approve - \xef\xbb\xbf{"
    )
    assert frame(raw) == str(len(raw)).encode() + b" " + raw


def test_engine_reloads_are_recorded_and_exported_with_the_engine_as_actor(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    collector = Collector()
    folder = routes(tmp_path, syslog_yaml(collector.port))
    pipeline = Pipeline(db_url, folder).start()
    try:
        routes_file = folder / "routes.yaml"
        routes_file.write_text(MERGES + "# edited\n", encoding="utf-8")
        reloaded = wait_for(store, actions.CONFIG_RELOAD, 1)
        routes_file.write_text("routes: [\n", encoding="utf-8")
        refused = wait_for(store, actions.CONFIG_RELOAD, 2)[1]
        received = collector.messages(2)
    finally:
        pipeline.stop()
        collector.close()
    (applied,) = reloaded
    assert (applied.actor, applied.outcome) == (ENGINE_ACTOR, Outcome.OK)
    assert applied.criteria == {"trigger": "file change"}
    assert applied.objects == (f"config:{folder}",)
    assert refused.outcome == Outcome.REFUSED and "previous configuration" in refused.detail
    check_message(received[0], applied)
    check_message(received[1], refused)


def wait_for(store: Engine, action: str, count: int, timeout: float = 20) -> list[AuditRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = audit_rows(store, action=action)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {count} {action} event(s) within {timeout}s")


def test_the_audit_section_is_checked_with_its_place(tmp_path: Path) -> None:
    folder = routes(tmp_path, "audit:\n  syslog:\n    host: 127.0.0.1\n    port: 70000\n")
    result = run("routes", "check", str(folder))
    assert result.returncode == 1
    assert "audit.yaml:3" in result.stdout + result.stderr
    assert "port 70000 is outside 1-65535" in result.stdout + result.stderr
