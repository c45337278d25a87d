"""The review: deciding proposals, the merge an approval sends, and every safety rule."""

from __future__ import annotations

import csv
import io
import json
import selectors
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import hl7
import pexpect
import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from engine.cli.common import shown_date
from engine.cli.review_screen import shown_probability
from engine.config.loader import load_config
from engine.config.model import EngineConfig
from engine.hl7v2.message import Message
from engine.mpi.tables import Order, Patient, PatientIdentifier
from engine.reconcile.run import reconcile
from engine.reconcile.settings import ReconcilerSettings
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.review import decisions
from engine.review.decisions import Decided, ReviewError, defer, reject
from engine.review.merge_message import Person, build_merge
from engine.review.settings import ReviewSettings
from engine.review.tables import Action, ReviewDecision
from engine.review.upkeep import refresh
from engine.review.worklist import ReviewFilter, decision_views, rows
from engine.routes.router import Router
from engine.settings import ConfigError
from engine.store.schema import Delivery, DeliveryState
from engine.testing import FakeReceiver, free_port
from tests.support import (  # noqa: F401  (store_mode: every test clear and encrypted)
    Pipeline,
    assert_fits,
    cli_env,
    config_folder,
    crosswalk,
    destination_yaml,
    store_mode,
)
from tests.support import run_crosswalk as run
from tests.test_reconcile import SETTINGS, load, study

MERGES = """
routes:
  merges:
    source: review
    filter: {type: [ADT^A40, ADT^A47, ORM^O01]}
    destinations: [pacs]
"""
REVIEW = "review:\n  mrn_authority: GENHOSP\n"
STUDIES = [
    study("1.1", "X77", "SMITH^WILLIAM", "1958-03-14", "M"),
    study("1.2", "X78", "KOWALSKI^TERESA", "1954-11-03", "F"),
    study("1.3", "X79", "BRENNAN^PATRICK", "1949-02-27", "M"),
]
NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def approve(store: Engine, config: EngineConfig, proposal_id: int, who: str) -> Decided:
    """Approve as the CLI does: the review routes through the configured router."""
    return decisions.approve(store, config.review, Router(config).route, proposal_id, who)


def folder(tmp_path: Path, pacs_port: int = 9, routes: str = MERGES, review: str = REVIEW) -> Path:
    return config_folder(
        tmp_path,
        routes,
        endpoints=destination_yaml(pacs_port),
        extra={"review.yaml": review},
    )


def proposal_of(store: Engine, uid: str) -> int:
    with store.connect() as connection:
        return int(
            connection.execute(
                select(Proposal.id).where(Proposal.study_uid == uid).order_by(Proposal.rank)
            )
            .scalars()
            .first()
        )


def status_of(store: Engine, proposal_id: int) -> str:
    with store.connect() as connection:
        return str(
            connection.execute(select(Proposal.status).where(Proposal.id == proposal_id)).scalar()
        )


def prepared(store: Engine, tmp_path: Path, studies: list[str] = STUDIES, **settings: object):
    load(store, tmp_path, studies)
    reconcile(store, ReconcilerSettings(min_em_pairs=10**9, **settings))  # type: ignore[arg-type]


def db_args(db_url: str, config: Path) -> list[str]:
    return ["--db", db_url, "--config", str(config)]


def segment_fields(text: str, name: str) -> list[str]:
    return next(s for s in text.split("\r") if s.startswith(name + "|")).split("|")


def test_an_approval_reaches_a_fake_pacs_as_an_a40_with_the_right_mrg_and_pid(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    prepared(store, tmp_path)
    pacs = FakeReceiver()
    config = folder(tmp_path, pacs.port)
    pipeline = Pipeline(db_url, config).start()
    try:
        chosen = proposal_of(store, "1.1")
        approved = run(
            "review",
            "approve",
            str(chosen),
            "--user",
            "alice",
            "--reason",
            "same DOB and name",
            *db_args(db_url, config),
        )
        assert approved.returncode == 0, approved.stderr
        assert f"proposal {chosen}: approved" in approved.stdout
        assert pacs.wait_for(1, timeout=15)
        text = pacs.texts[0]
        msh, pid, mrg = (segment_fields(text, s) for s in ("MSH", "PID", "MRG"))
        assert msh[8] == "ADT^A40^ADT_A39" and msh[2] == "CROSSWALK" and msh[4] == "PACS"
        assert mrg[1] == "X77^^^OTHERSITE"
        assert pid[3] == "100234^^^GENHOSP^MR"
        assert pid[5] == "SMITH^WILLIAM^J" and pid[7] == "19580314" and pid[8] == "M"
        assert mrg[7] == "SMITH^WILLIAM"  # the name the PACS had
        assert segment_fields(text, "EVN")[5] == "alice"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shown = run("review", "show", str(chosen), *db_args(db_url, config))
            if "pacs: delivered" in shown.stdout.replace("\n", " "):
                break
            time.sleep(0.2)
        assert "merge: pacs: delivered" in shown.stdout, shown.stdout
        listed = run(
            "review", "list", "--status", "approved", "--format", "json", *db_args(db_url, config)
        )
        assert json.loads(listed.stdout)[0]["delivery"] == "pacs: delivered"
    finally:
        pipeline.stop()
        pacs.stop()
    audit = run("review", "audit", "--format", "json", "--db", db_url)
    (decision,) = json.loads(audit.stdout)
    assert decision["reviewer"] == "alice" and decision["action"] == "approved"
    assert decision["reason"] == "same DOB and name" and decision["merge_control_id"]
    assert decision["snapshot"]["patient"]["mrn"] == "100234"
    assert decision["snapshot"]["study"]["patient_id"] == "X77"
    was_is = tmp_path / "was-is.csv"
    assert run("review", "export-was-is", str(was_is), "--db", db_url).returncode == 0
    (line,) = csv.DictReader(was_is.open(encoding="utf-8"))
    assert (line["old_patient_id"], line["old_issuer"], line["mrn"], line["authority"]) == (
        "X77",
        "OTHERSITE",
        "100234",
        "GENHOSP",
    )
    assert line["approved_by"] == "alice" and line["delivery"] == "pacs: delivered"


def test_the_merge_message_follows_the_settings_and_escapes_values() -> None:
    settings = ReviewSettings(merge_message="A47", orphan_issuer="PACSLOCAL", version="2.3.1")
    message = build_merge(
        settings,
        orphan_id="T|1",
        orphan_issuer="",
        orphan=Person("DOE", "JOHN"),
        mrn="100234",
        authority="GENHOSP",
        patient=Person("O'NEIL^SMITH", "ANN&MARIE", birth_date="19700101", sex="F"),
        reviewer="bob",
        now=NOW,
        control_id="C1",
    )
    parsed = Message.parse(message.raw.decode())
    assert parsed.type_parts() == ("ADT", "A47", "ADT_A30")
    text = message.raw.decode()
    assert segment_fields(text, "MRG")[1] == "T\\F\\1^^^PACSLOCAL"
    assert segment_fields(text, "PID")[5] == "O'NEIL\\S\\SMITH^ANN\\T\\MARIE"
    assert segment_fields(text, "MSH")[11] == "2.3.1"
    # Another implementation reads the values back unescaped (python-hl7, as a PACS would).
    other = hl7.parse(text)
    assert other.unescape(str(other.segment("PID")[5][0][0])) == "O'NEIL^SMITH"
    assert other.unescape(str(other.segment("MRG")[1][0][0])) == "T|1"
    assert str(other.segment("MRG")[1][0][3]) == "PACSLOCAL"
    with pytest.raises(ValueError, match="no patient id"):
        bare_merge(settings, "")


def bare_merge(settings: ReviewSettings, orphan_id: str) -> None:
    build_merge(
        settings,
        orphan_id=orphan_id,
        orphan_issuer="",
        orphan=Person(),
        mrn="1",
        authority="",
        patient=Person(),
        reviewer="bob",
        now=NOW,
    )


def test_one_orphan_cannot_be_approved_for_two_patients(store: Engine, tmp_path: Path) -> None:
    # Twins: the study's given name is halfway between theirs; both are proposed.
    prepared(store, tmp_path, [study("2.1", "X90", "OKAFOR^ANN", "1990-06-12", "F")], possible=0.01)
    config = load_config(folder(tmp_path))
    with store.connect() as connection:
        both = rows(connection, ReviewFilter(), "GENHOSP")
    assert len(both) == 2
    first, second = both
    decided = approve(store, config, first.proposal_id, "alice")
    assert decided.closed == (second.proposal_id,)
    with pytest.raises(ReviewError, match="closed"):
        approve(store, config, second.proposal_id, "bob")
    # Even written behind the review's back, the database refuses a second approval.
    with pytest.raises(IntegrityError), store.begin() as connection:
        connection.execute(
            update(Proposal)
            .where(Proposal.id == second.proposal_id)
            .values(status=ProposalStatus.APPROVED)
        )
    with store.connect() as connection:
        actions = [d.action for d in decision_views(connection)]
    assert actions == [Action.APPROVED, Action.CLOSED]


def test_a_proposal_follows_the_merge_of_its_candidate(store: Engine, tmp_path: Path) -> None:
    prepared(store, tmp_path)
    chosen = proposal_of(store, "1.1")
    with store.begin() as connection:
        old = connection.execute(select(Proposal.patient_id).where(Proposal.id == chosen)).scalar()
        survivor = connection.execute(
            select(PatientIdentifier.patient_id).where(PatientIdentifier.value == "100700")
        ).scalar()
        # SMITH (the candidate) was merged into BRENNAN's record, then that into a third one.
        third = connection.execute(
            select(PatientIdentifier.patient_id).where(PatientIdentifier.value == "100600")
        ).scalar()
        connection.execute(update(Patient).where(Patient.id == old).values(merged_into=survivor))
        connection.execute(update(Patient).where(Patient.id == survivor).values(merged_into=third))
    done = refresh(store, "GENHOSP")
    assert done.followed >= 1
    with store.connect() as connection:
        moved = connection.execute(select(Proposal.patient_id).where(Proposal.id == chosen))
        assert moved.scalar() == third
        (followed,) = [d for d in decision_views(connection, proposal_id=chosen) if d.automatic]
    assert followed.action == Action.FOLLOWED_MERGE and f"{old} was merged" in followed.reason
    config = load_config(folder(tmp_path))
    approve(store, config, chosen, "alice")
    with store.connect() as connection:
        payload = connection.execute(select(Delivery.payload)).scalar_one()
    assert segment_fields(payload.decode(), "PID")[3] == "100600^^^GENHOSP^MR"


def test_proposals_of_a_study_the_feed_resolved_are_closed(store: Engine, tmp_path: Path) -> None:
    prepared(store, tmp_path)
    chosen = proposal_of(store, "1.2")
    with store.begin() as connection:
        owner = connection.execute(
            select(PatientIdentifier.patient_id).where(PatientIdentifier.value == "100388")
        ).scalar()
        # The ADT feed registered the study's id (X78 of OTHERSITE) for the patient.
        connection.execute(
            insert(PatientIdentifier).values(
                patient_id=owner, value="X78", authority="OTHERSITE", type_code="PI"
            )
        )
    listed = run("review", "list", "--format", "json", "--db", str(store.url))
    assert chosen not in [r["proposal_id"] for r in json.loads(listed.stdout)]
    assert "1 closed" in listed.stderr
    assert status_of(store, chosen) == ProposalStatus.CLOSED
    with store.connect() as connection:
        (closed,) = decision_views(connection, proposal_id=chosen)
    assert closed.action == Action.CLOSED and "no longer an orphan" in closed.reason
    with pytest.raises(ReviewError, match="closed"):
        approve(store, load_config(folder(tmp_path)), chosen, "alice")


def test_nothing_is_merged_without_a_decision_unless_an_automatic_band_is_set(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    load(store, tmp_path, STUDIES)
    reconciler = "reconciler:\n  min_em_pairs: 1000000000\n"
    manual = folder(tmp_path, review=REVIEW + reconciler)
    result = run("reconcile", "run", *db_args(db_url, manual))
    assert result.returncode == 0, result.stderr
    assert "automatically" not in result.stdout
    with store.connect() as connection:
        statuses = set(connection.execute(select(Proposal.status)).scalars())
        assert statuses == {ProposalStatus.PENDING}
        assert connection.execute(select(Delivery.id)).first() is None
    automatic = folder(
        tmp_path,
        review=REVIEW
        + "  auto_approve_band: strong\n  auto_approve_min_probability: 0.99\n"
        + reconciler,
    )
    result = run("reconcile", "run", *db_args(db_url, automatic))
    assert result.returncode == 0, result.stderr
    assert "approved automatically (band strong, probability >= 0.99): 3" in result.stdout
    with store.connect() as connection:
        decisions = decision_views(connection)
        queued = connection.execute(select(Delivery.state)).scalars().all()
    assert {(d.action, d.reviewer, d.automatic) for d in decisions} == {
        (Action.APPROVED, "crosswalk (auto)", True)
    }
    assert queued == [DeliveryState.QUEUED] * 3


def test_rejections_are_remembered_and_need_a_reason(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    prepared(store, tmp_path)
    chosen = proposal_of(store, "1.3")
    config = folder(tmp_path)
    missing = run("review", "reject", str(chosen), *db_args(db_url, config))
    assert missing.returncode == 2 and "--reason" in missing.stderr
    with pytest.raises(ReviewError, match="reason"):
        reject(store, chosen, "bob", "  ")
    done = run(
        "review",
        "reject",
        str(chosen),
        "--reason",
        "different person: other DOB",
        "--user",
        "bob",
        *db_args(db_url, config),
    )
    assert done.returncode == 0, done.stderr
    reconcile(store, SETTINGS)
    assert status_of(store, chosen) == ProposalStatus.REJECTED
    with store.connect() as connection:
        assert (
            connection.execute(
                select(Proposal.id).where(Proposal.study_uid == "1.3", Proposal.id != chosen)
            ).first()
            is None
        )
    again = run("review", "approve", str(chosen), *db_args(db_url, config))
    assert again.returncode == 1
    assert "rejected by bob" in again.stderr and "different person" in again.stderr


def test_approval_is_refused_when_no_route_takes_the_merge(store: Engine, tmp_path: Path) -> None:
    prepared(store, tmp_path)
    config = load_config(folder(tmp_path, routes="routes: {}\n"))
    chosen = proposal_of(store, "1.1")
    with pytest.raises(ReviewError, match="would not reach the PACS"):
        approve(store, config, chosen, "alice")
    assert status_of(store, chosen) == ProposalStatus.PENDING
    with store.connect() as connection:
        assert connection.execute(select(ReviewDecision.id)).first() is None


def test_batch_approval_shows_the_count_and_asks_first(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    prepared(store, tmp_path)
    config = folder(tmp_path)
    args = ["review", "approve", "--band", "strong", "--min-probability", "0.99"]
    dry = run(*args, "--dry-run", *db_args(db_url, config))
    assert dry.returncode == 0 and "dry run: 3 proposal(s) would be approved" in dry.stdout
    declined = _run_with_input([*args, *db_args(db_url, config)], "n\n")
    assert declined.returncode == 1 and "Approve 3 proposal(s)" in declined.stderr
    with store.connect() as connection:
        assert connection.execute(select(ReviewDecision.id)).first() is None
    done = run(*args, "--yes", "--user", "carol", *db_args(db_url, config))
    assert done.returncode == 0, done.stderr
    assert "3 approved, 0 refused" in done.stdout
    both = run("review", "approve", "1", "--band", "strong", *db_args(db_url, config))
    assert both.returncode == 2 and "not both" in both.stderr


def _run_with_input(args: list[str], text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        crosswalk(*args), input=text, capture_output=True, text=True, env=cli_env(), timeout=60
    )


def test_list_filters_and_formats(store: Engine, db_url: str, tmp_path: Path) -> None:
    prepared(store, tmp_path, [*STUDIES[:2], STUDIES[2].replace(",CT,CT", ",MR,MR")])
    config = folder(tmp_path)
    listed = run("review", "list", "--modality", "mr", "--format", "csv", *db_args(db_url, config))
    (only,) = csv.DictReader(io.StringIO(listed.stdout))
    assert only["study_uid"] == "1.3" and only["mrn"] == "100700"
    dated = run("review", "list", "--study-from", "2025-01-03", *db_args(db_url, config))
    assert "0 proposal(s)" in dated.stdout
    bad = run("review", "list", "--study-from", "yesterday", *db_args(db_url, config))
    assert bad.returncode == 2 and "is not a date" in bad.stderr
    shown = run("review", "show", str(proposal_of(store, "1.1")), *db_args(db_url, config))
    for words in (
        "study (PACS)",
        "patient (MPI)",
        "how the probability was reached",
        "prior",
        "birth_date (exact)",
        "X77^^^OTHERSITE",
        "100234^^^GENHOSP",
    ):
        assert words in shown.stdout
    assert run("review", "show", "999", *db_args(db_url, config)).returncode == 1


def test_show_tells_the_reviewer_what_the_pacs_recorded_wrong(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    # Day and month swapped into a date that cannot be: kept, flagged, and still matched.
    prepared(store, tmp_path, [study("1.9", "X90", "SMITH^WILLIAM", "1958-14-03", "W")])
    config = folder(tmp_path)
    shown = run("review", "show", str(proposal_of(store, "1.9")), *db_args(db_url, config))
    assert shown.returncode == 0, shown.stderr
    words = " ".join(shown.stdout.split())
    assert "flag birth date 19581403 is not a calendar date" in words
    assert "flag sex W is not a sex code (M, F, O, U, A, N, X)" in words
    assert "birth_date (day_month_swapped)" in words
    assert "1958-14-03" in words  # as the PACS recorded it, beside the MPI's 1958-03-14


def test_defer_takes_a_proposal_out_of_the_queue(store: Engine, tmp_path: Path) -> None:
    prepared(store, tmp_path)
    chosen = proposal_of(store, "1.2")
    defer(store, chosen, "dave", "ask the registrar")
    with store.connect() as connection:
        pending = [r.proposal_id for r in rows(connection, ReviewFilter())]
        deferred = rows(connection, ReviewFilter(statuses=(ProposalStatus.DEFERRED,)))
    assert chosen not in pending and [r.proposal_id for r in deferred] == [chosen]
    with pytest.raises(ReviewError, match="deferred by dave"):
        defer(store, chosen, "dave")
    approve(store, load_config(folder(tmp_path)), chosen, "erin")  # deferred can be approved


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_the_interactive_loop_through_a_pseudo_terminal(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    prepared(store, tmp_path)
    config = folder(tmp_path)
    command = crosswalk("review", "next", "--user", "frank", *db_args(db_url, config))
    child = pexpect.spawn(
        command[0], command[1:], env=cli_env(), encoding="utf-8", timeout=30, dimensions=(50, 160)
    )
    try:
        child.expect(r"1 of 3")
        child.expect(r"\[a\]pprove")
        child.send("a")  # one key, no Enter
        child.expect(r"approved; merge message \w+ queued for pacs")
        child.expect(r"2 of 3")
        child.expect(r"\[a\]pprove")
        child.send("x")
        child.expect("unknown key")
        child.send("r")
        child.expect("why is it not a match")
        child.sendline("different middle name and address")
        child.expect("rejected")
        child.expect(r"3 of 3")
        child.expect(r"\[a\]pprove")
        child.send("q")
        child.expect(r"done: 1 approved, 1 rejected, 0 deferred, 0 skipped")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    with store.connect() as connection:
        decided = {(d.action, d.reviewer) for d in decision_views(connection)}
    assert decided == {(Action.APPROVED, "frank"), (Action.REJECTED, "frank")}


def test_review_settings_are_checked(tmp_path: Path) -> None:
    for text, line, words in (
        ("review:\n  auto_approve_band: sure\n", 2, "auto_approve_band 'sure' is not a band"),
        ("review:\n  merge_message: A08\n", 2, "merge_message must be one of A40, A47"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_config(folder(tmp_path, review=text))
        assert f"review.yaml:{line}" in str(caught.value) and words in str(caught.value)
    endpoints = "listeners:\n  review: {port: 0}\ndestinations:\n  pacs: {port: 9}\n"
    reserved = config_folder(tmp_path, MERGES, endpoints=endpoints)
    with pytest.raises(ConfigError, match="listener name 'review' is reserved"):
        load_config(reserved)


def test_an_order_update_moves_a_trauma_study_by_its_accession(
    store: Engine, tmp_path: Path
) -> None:
    trauma = [
        study("3.1", "TR123", "DOE^JOHN", "1900-01-01", "M", accession="ACC9"),
        study("3.2", "TR124", "DOE^JOHN", "1900-01-01", "M"),
    ]
    load(store, tmp_path, trauma)
    with store.begin() as connection:
        owner = connection.execute(
            select(PatientIdentifier.patient_id).where(PatientIdentifier.value == "100700")
        ).scalar_one()
        connection.execute(
            insert(Order).values(
                patient_id=owner,
                accession="ACC9",
                placer_number="P77",
                filler_number="F77",
                procedure_code="CTHEAD",
                recorded_at=NOW,
            )
        )
    reconcile(store, SETTINGS)
    config = load_config(folder(tmp_path, review=REVIEW + "  merge_message: O01\n"))
    approve(store, config, proposal_of(store, "3.1"), "gina")
    with store.connect() as connection:
        payload = connection.execute(select(Delivery.payload)).scalar_one().decode()
    assert segment_fields(payload, "MSH")[8] == "ORM^O01"
    assert segment_fields(payload, "PID")[3] == "100700^^^GENHOSP^MR"
    orc, obr = segment_fields(payload, "ORC"), segment_fields(payload, "OBR")
    assert orc[1:4] == ["XO", "P77", "F77"]
    assert obr[4] == "CTHEAD" and obr[18] == "ACC9" and obr[24] == "CT"
    assert segment_fields(payload, "ZDS")[1].startswith("3.1^CROSSWALK^Application^DICOM")
    assert "MRG|" not in payload
    with pytest.raises(ValueError, match="no accession number"):
        bare_merge(ReviewSettings(merge_message="O01"), "TR124")


def test_the_loop_reads_one_line_per_key_when_input_is_not_a_terminal(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    prepared(store, tmp_path)
    config = folder(tmp_path)
    args = ["review", "next", "--user", "hank", *db_args(db_url, config)]
    result = _run_with_input(args, "s\nd\n")  # skip, defer, then end of input: quit
    assert result.returncode == 0, result.stderr
    assert "done: 0 approved, 0 rejected, 1 deferred, 1 skipped" in result.stdout
    with store.connect() as connection:
        assert [d.action for d in decision_views(connection)] == [Action.DEFERRED]


PEERS = Path(__file__).resolve().parent / "peers"


@pytest.fixture(scope="session")
def simple_hl7(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with simple-hl7 (npm) installed from tests/peers' lock file; skips without
    Node.js or when the npm registry cannot be reached."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are not installed")
    folder = tmp_path_factory.mktemp("peers")
    for name in ("package.json", "package-lock.json", "simple_hl7_pacs.js"):
        shutil.copy(PEERS / name, folder / name)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        pytest.skip(f"npm ci failed: {done.stderr.strip()[-300:]}")
    return folder


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line ``process`` prints, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    if not ready:
        raise AssertionError(f"no output from {process.args} within {timeout}s")
    return process.stdout.readline().strip()


def test_a_pacs_built_on_another_hl7_library_reads_the_merge(
    store: Engine, db_url: str, tmp_path: Path, simple_hl7: Path
) -> None:
    prepared(store, tmp_path)
    port = free_port()
    pacs = subprocess.Popen(
        ["node", "simple_hl7_pacs.js", str(port)],
        cwd=simple_hl7,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(pacs, 30) == f"listening {port}"
        config = folder(tmp_path, port)
        pipeline = Pipeline(db_url, config).start()
        try:
            chosen = proposal_of(store, "1.2")
            approve(store, load_config(config), chosen, "ida")
            seen = json.loads(read_line(pacs, 15))
            deadline = time.monotonic() + 10
            state = ""
            while time.monotonic() < deadline and state != DeliveryState.DELIVERED:
                time.sleep(0.1)
                with store.connect() as connection:
                    state = connection.execute(select(Delivery.state)).scalar_one()
        finally:
            pipeline.stop()
    finally:
        pacs.kill()
        pacs.wait(10)
    assert (seen["type"], seen["event"]) == ("ADT", "A40")
    assert seen["mrg1"] == "X78^^^OTHERSITE" and seen["mrg7"] == "KOWALSKI^TERESA"
    assert seen["pid3"] == "100388^^^GENHOSP^MR" and seen["pid5"] == "KOWALSKI^TERESA"
    assert (seen["pid7"], seen["pid8"]) == ("19541103", "F")
    assert state == DeliveryState.DELIVERED  # simple-hl7's own ACK was taken as AA


def test_the_screens_agree_and_fit_80_columns(store: Engine, db_url: str, tmp_path: Path) -> None:
    """`review next` on an 80-column terminal: the header's weight is the waterfall's total (the
    prior included), a probability short of 1 is never printed as 1.0000, and no id, date or
    accession number is cut; `review list` alike, with dates as YYYY-MM-DD."""
    prepared(store, tmp_path)
    config = folder(tmp_path)
    args = ["review", "next", "--user", "ivy", *db_args(db_url, config)]
    shown = subprocess.run(
        crosswalk(*args),
        input="s\ns\ns\n",
        capture_output=True,
        text=True,
        env=cli_env(COLUMNS="80"),
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert_fits(shown.stdout, 80, ["X77^^^OTHERSITE", "100234^^^GENHOSP", "1958-03-14"])
    screens = shown.stdout.split(" of 3 ")[1:]
    assert len(screens) == 3
    with store.connect() as connection:
        listed = {r.proposal_id: r for r in rows(connection, ReviewFilter())}
    for text in screens:
        header = next(line for line in text.splitlines() if line.startswith("proposal "))
        proposal = listed[int(header.split()[1])]
        weight = float(header.split("weight ")[1].split()[0])
        waterfall = text.split("how the probability was reached")[1]
        running = [
            line.split("│")[3].strip()
            for line in waterfall.splitlines()
            if line.startswith("│") and line.split("│")[3].strip()
        ]
        assert running and float(running[-1]) == weight, (header, running)
        probability = f"{proposal.probability:.4f}"
        if proposal.probability < 1 and probability == "1.0000":
            assert "p > 0.9999" in header
        else:
            assert f"p={probability}" in header

    listed_80 = run("review", "list", *db_args(db_url, config), columns=80)
    assert listed_80.returncode == 0, listed_80.stderr
    dates = [shown_date(r.study.study_date) for r in listed.values()]
    assert_fits(listed_80.stdout, 80, [*dates, *(r.mrn for r in listed.values())])
    assert not any(r.study.study_date in listed_80.stdout for r in listed.values())


def test_a_probability_is_never_rounded_to_a_certainty() -> None:
    assert shown_probability(0.999997) == "> 0.9999"
    assert shown_probability(0.99995) == "> 0.9999"
    assert shown_probability(0.99994) == "0.9999"
    assert shown_probability(1.0) == "1.0000"
    assert shown_probability(0.00002) == "< 0.0001"
    assert shown_probability(0.0) == "0.0000"
    assert shown_probability(0.9999997, 6) == "> 0.999999"
