"""Merge targets: an approval applied to a real Orthanc directly (a PACS without an HL7 feed).

Orthanc runs on loopback (tests/orthanc.py) holding DICOM files made here; the engine runs in a
thread; the commands run as a user runs them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select

from engine.config.loader import load_config
from engine.merge_targets.job import ArchiveJob, Identity
from engine.merge_targets.orthanc import (
    ArchiveRefusal,
    ArchiveUnavailable,
    OrthancClient,
    move_study,
)
from engine.merge_targets.settings import MergeTargetSettings
from engine.mllp.tls import ClientTLS
from engine.reconcile.run import reconcile
from engine.settings import ConfigError
from engine.store.schema import Delivery, DeliveryState
from engine.testing import free_port
from tests.orthanc import Orthanc, running_orthanc, study_instance
from tests.support import Pipeline, config_folder, serving
from tests.support import run_crosswalk as run
from tests.test_reconcile import MPI, MPI_HEADER, SETTINGS, write
from tests.test_review import proposal_of

USER, PASSWORD = "crosswalk", "s3cret-pw"
CREDENTIALS = (USER, PASSWORD)
ENDPOINTS = "listeners:\n  ehr: {port: 0}\n"
NO_ROUTES = "routes: {}\n"
# The orphan: the trauma registration the PACS kept; the MPI knows him as 100234^^^GENHOSP.
ORPHAN = {
    "patient_id": "X77",
    "issuer": "OTHERSITE",
    "patient_name": "SMITH^WILLIAM",
    "birth_date": "19580314",
    "sex": "M",
    "study_date": "20250102",
    "accession": "ACC77",
}
MPI_IDENTITY = {
    "PatientID": "100234",
    "IssuerOfPatientID": "GENHOSP",
    "PatientName": "SMITH^WILLIAM^J",
    "PatientBirthDate": "19580314",
    "PatientSex": "M",
}


def get(orthanc: Orthanc, path: str, body: Any = None) -> Any:
    """Orthanc's answer to GET (or POST ``body``), as the test's own client, with credentials."""
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(orthanc.request(path, data), timeout=10) as response:
        return json.load(response)


def copies(orthanc: Orthanc, study_uid: str) -> list[dict[str, str]]:
    """The patient tags of each study Orthanc holds with this Study Instance UID."""
    found = get(
        orthanc, "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    )
    tags = [get(orthanc, f"/studies/{one}/shared-tags?simplify") for one in found]
    return [{key: one.get(key, "") for key in MPI_IDENTITY} for one in tags]


def upload(orthanc: Orthanc, study_uid: str, instances: int = 3, **patient: str) -> None:
    """A study of ``instances`` images in two series."""
    series = [generate_uid(), generate_uid()]
    for number in range(instances):
        dataset = study_instance(study_uid=study_uid, **{**ORPHAN, **patient})
        dataset.SeriesInstanceUID = series[number % 2]
        dataset.InstanceNumber = number + 1
        orthanc.upload(dataset)


def review_yaml(url: str, password: str = PASSWORD, **extra: str) -> str:
    settings = {
        "kind": "orthanc",
        "url": url,
        "username": USER,
        "password": password,
        "retry_initial": "100ms",
        "retry_max": "300ms",
        **extra,
    }
    body = "".join(f"      {key}: {value}\n" for key, value in settings.items())
    return f"review:\n  mrn_authority: GENHOSP\n  merge_targets:\n    orthanc-main:\n{body}"


def folder(tmp_path: Path, review: str, archives: str = "") -> Path:
    return config_folder(
        tmp_path, NO_ROUTES, endpoints=ENDPOINTS + archives, extra={"review.yaml": review}
    )


def db_args(db_url: str, config: Path) -> list[str]:
    return ["--db", db_url, "--config", str(config)]


def wait_for(check: Callable[[], str | None], timeout: float = 20.0) -> str:
    """Poll ``check`` until it returns text (bounded); the last text seen otherwise fails."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last is not None:
            return last
        time.sleep(0.2)
    raise AssertionError("timed out")


def shown(db_url: str, config: Path, proposal: int, words: str) -> Callable[[], str | None]:
    def check() -> str | None:
        text = run("review", "show", str(proposal), *db_args(db_url, config)).stdout
        return text if words in " ".join(text.split()) else None

    return check


def load_mpi(store: Engine, tmp_path: Path) -> None:
    from engine.mpi.importer import MpiImport

    MpiImport(store, write(tmp_path / "mpi.csv", MPI_HEADER, MPI)).run()


def approve(db_url: str, config: Path, proposal: int) -> None:
    approved = run(
        "review",
        "approve",
        str(proposal),
        "--user",
        "alice",
        "--reason",
        "same person",
        *db_args(db_url, config),
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr


def approved_until(db_url: str, config: Path, proposal: int, words: str) -> str:
    """Approve (the engine running), then `review show` once it says ``words``."""
    approve(db_url, config, proposal)
    return " ".join(wait_for(shown(db_url, config, proposal, words)).split())


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc", credentials=CREDENTIALS) as running:
        yield running


def test_an_approval_moves_the_study_in_orthanc_and_the_next_pull_sees_it_resolved(
    store: Engine, db_url: str, tmp_path: Path, orthanc: Orthanc
) -> None:
    study_uid = generate_uid()
    upload(orthanc, study_uid)
    web = orthanc.url.replace("://", f"://{USER}:{PASSWORD}@") + "/dicom-web"
    archives = f"archives:\n  main:\n    dicomweb_url: {web}\n"
    config = folder(tmp_path, review_yaml(orthanc.url, archive="main"), archives)
    load_mpi(store, tmp_path)
    pulled = run("studies", "pull", "main", *db_args(db_url, config))
    assert pulled.returncode == 0, pulled.stderr
    orphans = run("studies", "orphans", "--format", "json", *db_args(db_url, config))
    assert study_uid in orphans.stdout
    reconcile(store, SETTINGS)
    proposal = proposal_of(store, study_uid)
    pipeline = Pipeline(db_url, config).start()
    try:
        screen = approved_until(db_url, config, proposal, "orthanc-main: delivered")
        assert "merge: orthanc-main: delivered" in screen
    finally:
        pipeline.stop()
    # One copy left, same Study Instance UID, carrying the MPI patient's identity.
    assert copies(orthanc, study_uid) == [MPI_IDENTITY]
    found = get(
        orthanc, "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    )
    assert len(get(orthanc, f"/studies/{found[0]}/instances")) == 3
    assert run("studies", "pull", "main", "--full", *db_args(db_url, config)).returncode == 0
    orphans = run("studies", "orphans", "--format", "json", *db_args(db_url, config))
    assert study_uid not in orphans.stdout, orphans.stdout
    status = run("queue", "status", *db_args(db_url, config))
    assert "orthanc-main" in status.stdout
    with store.connect() as connection:
        (state, ack) = connection.execute(
            select(Delivery.state, Delivery.ack).where(Delivery.destination == "orthanc-main")
        ).one()
    assert state == DeliveryState.DELIVERED and ack.startswith(b"changed: Orthanc study")
    audit = run("audit", "list", "--action", "archive.modify", "--format", "json", "--db", db_url)
    (event,) = json.loads(audit.stdout)
    assert event["outcome"] == "ok" and f"proposal:{proposal}" in event["objects"]
    assert "100234" not in audit.stdout and "SMITH" not in audit.stdout  # ids only, no PHI


def prepared_from_csv(store: Engine, tmp_path: Path, study_uid: str) -> int:
    """The orphan loaded from a PACS export (no `archive:` on the target then), reconciled."""
    from engine.studies.importer import StudyImport
    from tests.test_reconcile import STUDY_HEADER, study

    load_mpi(store, tmp_path)
    row = study(study_uid, "X77", "SMITH^WILLIAM", "1958-03-14", "M")
    StudyImport(store, write(tmp_path / "studies.csv", STUDY_HEADER, [row])).run()
    reconcile(store, SETTINGS)
    return proposal_of(store, study_uid)


def test_an_archive_that_is_down_keeps_the_job_queued_until_it_is_back(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    study_uid = generate_uid()
    port = free_port()
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc", HttpPort=port, credentials=CREDENTIALS) as orthanc:
        upload(orthanc, study_uid)
    config = folder(tmp_path, review_yaml(f"http://127.0.0.1:{port}"))
    proposal = prepared_from_csv(store, tmp_path, study_uid)
    pipeline = Pipeline(db_url, config).start()
    try:
        screen = approved_until(
            db_url, config, proposal, "cannot connect"
        )  # while the archive is down
        assert "orthanc-main: queued" in screen
        status = run("queue", "status", "orthanc-main", *db_args(db_url, config))
        assert "cannot connect" in " ".join(status.stdout.split())
        # Back, with the same storage: the next try moves the study.
        with running_orthanc(
            tmp_path / "orthanc", HttpPort=port, credentials=CREDENTIALS
        ) as orthanc:
            wait_for(shown(db_url, config, proposal, "orthanc-main: delivered"))
            assert copies(orthanc, study_uid) == [MPI_IDENTITY]
    finally:
        pipeline.stop()


def test_wrong_credentials_are_said_plainly_and_a_corrected_password_finishes_the_job(
    store: Engine, db_url: str, tmp_path: Path, orthanc: Orthanc
) -> None:
    study_uid = generate_uid()
    upload(orthanc, study_uid)
    config = folder(tmp_path, review_yaml(orthanc.url, password="wrong"))
    proposal = prepared_from_csv(store, tmp_path, study_uid)
    pipeline = Pipeline(db_url, config).start()
    try:
        screen = approved_until(db_url, config, proposal, "refused the credentials")
        assert "HTTP 401" in screen and "wrong" not in screen
        status = run("queue", "status", "orthanc-main", *db_args(db_url, config))
        assert "refused the credentials" in " ".join(status.stdout.split())
        assert copies(orthanc, study_uid)[0]["PatientID"] == "X77"  # nothing changed
        (config / "review.yaml").write_text(review_yaml(orthanc.url), encoding="utf-8")
        wait_for(shown(db_url, config, proposal, "orthanc-main: delivered"))
    finally:
        pipeline.stop()
    assert copies(orthanc, study_uid) == [MPI_IDENTITY]


def test_a_study_missing_from_the_archive_is_set_aside_with_the_reason(
    store: Engine, db_url: str, tmp_path: Path, orthanc: Orthanc
) -> None:
    study_uid = generate_uid()  # never uploaded
    config = folder(tmp_path, review_yaml(orthanc.url))
    proposal = prepared_from_csv(store, tmp_path, study_uid)
    pipeline = Pipeline(db_url, config).start()
    try:
        screen = approved_until(db_url, config, proposal, "orthanc-main: errored")
        assert "no study with this Study Instance UID" in screen
    finally:
        pipeline.stop()
    audit = run("audit", "list", "--action", "archive.modify", "--format", "json", "--db", db_url)
    assert json.loads(audit.stdout)[0]["outcome"] == "refused"


def target(orthanc: Orthanc) -> MergeTargetSettings:
    return MergeTargetSettings(
        name="orthanc-main", kind="orthanc", url=orthanc.url, username=USER, password=PASSWORD
    )


NEW = Identity("100234", "GENHOSP", "SMITH^WILLIAM^J", "19580314", "M")


def test_a_job_retried_after_a_crash_between_steps_finishes_without_losing_an_image(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    study_uid = generate_uid()
    upload(orthanc, study_uid, instances=4)
    client = OrthancClient(target(orthanc))
    job = ArchiveJob(study_uid, Identity("X77", "OTHERSITE"), NEW, 1)
    (old,) = client.studies(study_uid)
    # Crashed after the copy was made, before the old one was deleted: both are there.
    client.modify_instances(old, NEW)
    assert len(copies(orthanc, study_uid)) == 2
    moved = move_study(client, job)
    assert moved.outcome == "changed" and moved.instances == 4
    assert copies(orthanc, study_uid) == [MPI_IDENTITY]
    # Crashed after the delete, before the outcome was stored: the retry finds it done.
    again = move_study(client, job)
    assert (again.outcome, again.study, again.instances) == ("already done", moved.study, 4)


def test_a_study_changed_in_the_archive_since_the_approval_is_left_alone(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    study_uid = generate_uid()
    upload(orthanc, study_uid, patient_id="SOMEONE-ELSE")
    job = ArchiveJob(study_uid, Identity("X77", "OTHERSITE"), NEW, 1)
    with pytest.raises(ArchiveRefusal, match="changed in the archive since"):
        move_study(OrthancClient(target(orthanc)), job)
    assert copies(orthanc, study_uid)[0]["PatientID"] == "SOMEONE-ELSE"


def test_a_study_that_already_carries_the_mrn_is_never_deleted(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    """Same PatientID: the copy would be the same Orthanc study; Orthanc keeps its stored
    instances (OverwriteInstances false), so the job refuses, and the study stays whole."""
    study_uid = generate_uid()
    upload(orthanc, study_uid, patient_id="100234", patient_name="SMYTH^WILLIAM")
    job = ArchiveJob(study_uid, Identity("100234", "OTHERSITE"), NEW, 1)
    with pytest.raises(ArchiveRefusal, match="OverwriteInstances"):
        move_study(OrthancClient(target(orthanc)), job)
    (left,) = copies(orthanc, study_uid)
    assert left["PatientName"] == "SMYTH^WILLIAM"
    found = get(
        orthanc, "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    )
    assert len(get(orthanc, f"/studies/{found[0]}/instances")) == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("kind: dicomweb\n      url: http://pacs:8080/dicom-web", "standard DICOMweb"),
        ("kind: orthanc\n      url: pacs:8042", "is not an http(s) URL"),
        ("kind: orthanc\n      url: http://u:p@pacs:8042", "must not carry credentials"),
        ("kind: orthanc\n      url: http://pacs:8042\n      archive: nowhere", "unknown archive"),
        ("kind: orthanc\n      url: http://pacs:8042\n      pasword: x", "did you mean"),
    ],
)
def test_merge_targets_are_checked(tmp_path: Path, body: str, message: str) -> None:
    review = f"review:\n  merge_targets:\n    pacs-archive:\n      {body}\n"
    with pytest.raises(ConfigError) as raised:
        load_config(folder(tmp_path, review))
    text = str(raised.value)
    assert message in text and "review.yaml:" in text, text


def test_a_merge_target_may_not_take_a_destination_name(tmp_path: Path) -> None:
    review = "review:\n  merge_targets:\n    mpi:\n      kind: orthanc\n      url: http://x:1\n"
    with pytest.raises(ConfigError, match="has the name of a destination"):
        load_config(folder(tmp_path, review))


def test_queue_status_names_a_target_before_its_first_job(db_url: str, tmp_path: Path) -> None:
    config = folder(tmp_path, review_yaml("http://127.0.0.1:9"))
    status = run("queue", "status", *db_args(db_url, config))
    assert status.returncode == 0 and "orthanc-main" in status.stdout, status.stdout


def test_an_engine_killed_with_the_job_queued_finishes_it_after_a_restart(
    store: Engine, db_url: str, tmp_path: Path
) -> None:
    """The job is in the store, not in the engine: SIGKILL while the archive is down, then a
    new engine process moves the study once the archive is back."""
    study_uid, http, listen = generate_uid(), free_port(), free_port()
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc", HttpPort=http, credentials=CREDENTIALS) as orthanc:
        upload(orthanc, study_uid)
    config = config_folder(
        tmp_path,
        NO_ROUTES,
        endpoints=f"listeners:\n  ehr: {{port: {listen}}}\n",
        extra={"review.yaml": review_yaml(f"http://127.0.0.1:{http}")},
    )
    proposal = prepared_from_csv(store, tmp_path, study_uid)
    args = ["--config", str(config), "--db", db_url]
    with serving(args, listen, tmp_path / "first.log", cwd=tmp_path) as first:
        screen = approved_until(db_url, config, proposal, "cannot connect")
        first.kill()
        first.wait(10)
    assert "orthanc-main: queued" in screen
    with (
        running_orthanc(tmp_path / "orthanc", HttpPort=http, credentials=CREDENTIALS) as orthanc,
        serving(args, listen, tmp_path / "second.log", cwd=tmp_path),
    ):
        wait_for(shown(db_url, config, proposal, "orthanc-main: delivered"))
        assert copies(orthanc, study_uid) == [MPI_IDENTITY]
    log = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert "SMITH" not in log and "100234" not in log and study_uid not in log  # no PHI


@contextlib.contextmanager
def tls_front(port: int, cert: Path, key: Path) -> Iterator[int]:
    """A TLS terminator on loopback in front of 127.0.0.1:``port`` (Debian's Orthanc 1.10 dies
    serving HTTPS with these certificates): its port. Each connection is piped both ways until
    either side closes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                secure = context.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):
                client.close()  # a client that does not trust us: its handshake fails
                continue
            upstream = socket.create_connection(("127.0.0.1", port))
            for one, other in ((secure, upstream), (upstream, secure)):
                threading.Thread(target=pipe, args=(one, other), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_an_https_archive_is_verified_against_the_targets_ca(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    from tests.certificates import Authority

    ca, other = Authority(tmp_path / "tls"), Authority(tmp_path / "tls", "Another CA")
    server = ca.issue("orthanc", file="orthanc")
    study_uid = generate_uid()
    upload(orthanc, study_uid)
    job = ArchiveJob(study_uid, Identity("X77", "OTHERSITE"), NEW, 1)
    with tls_front(orthanc.http_port, server.cert, server.key) as port:
        url = f"https://127.0.0.1:{port}"
        untrusting = replace(target(orthanc), url=url, tls=ClientTLS(ca=other.cert))
        with pytest.raises(ArchiveUnavailable, match="certificate verify failed"):
            move_study(OrthancClient(untrusting), job)
        assert copies(orthanc, study_uid)[0]["PatientID"] == "X77"
        secure = replace(target(orthanc), url=url, tls=ClientTLS(ca=ca.cert))
        assert move_study(OrthancClient(secure), job).outcome == "changed"
    assert copies(orthanc, study_uid) == [MPI_IDENTITY]


def test_a_targets_certificates_are_watched_for_expiry(tmp_path: Path) -> None:
    from engine.config.model import EngineConfig
    from engine.pipeline.certificates import expiring
    from engine.review.settings import ReviewSettings
    from tests.certificates import Authority

    ca = Authority(tmp_path / "tls")
    settings = MergeTargetSettings(
        name="old-pacs", kind="orthanc", url="https://pacs:8042", tls=ClientTLS(ca=ca.cert)
    )
    config = EngineConfig(review=ReviewSettings(merge_targets={"old-pacs": settings}))
    assert expiring(config) == []  # ten years left
    (line,) = expiring(config, days=4000)
    assert line.startswith("merge target old-pacs (CA): certificate") and "expires in" in line


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://old-pacs.hospital.org:8042", True),
        ("http://127.0.0.1:8042", False),  # loopback: nothing crosses the network
        ("https://old-pacs.hospital.org:8042", False),
    ],
)
def test_a_password_sent_over_plain_http_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture, url: str, warned: bool
) -> None:
    from engine.pipeline.merge_targets import warn_insecure

    settings = MergeTargetSettings(
        name="old-pacs", kind="orthanc", url=url, username=USER, password=PASSWORD
    )
    with caplog.at_level("ERROR"):
        warn_insecure(settings)
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert bool(said) == warned, said
    assert all("unencrypted (http)" in line and PASSWORD not in line for line in said)
