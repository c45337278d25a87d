"""`studies pull` against a real Orthanc on loopback: C-FIND, QIDO-RS, incremental pulls, errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import typer
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from engine.cli.pull import pull
from engine.config.loader import load_config
from engine.settings import ConfigError
from engine.store.database import open_store
from engine.studies.cfind import DicomQuery
from engine.studies.index import RECORD_COLUMNS
from engine.studies.pull import date_windows, pull_studies
from engine.studies.qido import QidoQuery
from engine.studies.query import PullError, split_address, split_person_name
from engine.studies.settings import ArchiveSettings
from engine.studies.tables import PullState, Study
from engine.testing import free_port
from tests.orthanc import Orthanc, running_orthanc, study_instance
from tests.support import config_folder

DEFAULT_ISSUER = "CROSSWALK-DEFAULT"

# The archive's studies: (instance keyword arguments, the index row expected from them).
STUDIES: list[tuple[dict[str, Any], dict[str, str]]] = [
    (
        {
            "patient_id": "MRN001",
            "patient_name": "Doe^John^Quincy",
            "issuer": "HOSP",
            "birth_date": "19700101",
            "sex": "M",
            "study_date": "20240105",
            "accession": "ACC001",
            "description": "CT HEAD W/O",
            "address": "1 Main St^Apt 2^Springfield^IL^62701",
            "phone": "555-0101",
            "modality": "CT",
        },
        {
            "patient_id": "MRN001",
            "issuer": "HOSP",
            "family_name": "Doe",
            "given_name": "John",
            "middle_name": "Quincy",
            "birth_date": "19700101",
            "sex": "M",
            "street": "1 Main St, Apt 2",
            "city": "Springfield",
            "state": "IL",
            "postal_code": "62701",
            "phone": "555-0101",
            "study_date": "20240105",
            "accession": "ACC001",
            "description": "CT HEAD W/O",
            "modality": "CT\\PT",
        },
    ),
    (
        {
            "patient_id": "MRN002",
            "patient_name": "Şahin^Ayşe",
            "charset": "ISO_IR 192",
            "birth_date": "19851231",
            "sex": "F",
            "study_date": "20240210",
            "accession": "ACC002",
            "description": "Kopf MRT ohne KM",
            "modality": "MR",
        },
        {
            "patient_id": "MRN002",
            "issuer": DEFAULT_ISSUER,
            "family_name": "Şahin",
            "given_name": "Ayşe",
            "birth_date": "19851231",
            "sex": "F",
            "study_date": "20240210",
            "accession": "ACC002",
            "description": "Kopf MRT ohne KM",
            "modality": "MR",
        },
    ),
    (
        {
            "patient_id": "X-77",
            "patient_name": "Smith^Anna",
            "issuer": "OUTSIDE",
            "study_date": "20240210",
            "accession": "ACC003",
            "modality": "US",
        },
        {
            "patient_id": "X-77",
            "issuer": "OUTSIDE",
            "family_name": "Smith",
            "given_name": "Anna",
            "study_date": "20240210",
            "accession": "ACC003",
            "modality": "US",
        },
    ),
    (
        {
            "patient_id": "MRN004",
            "patient_name": "Brown^Robert",
            "birth_date": "19501120",
            "sex": "M",
            "study_date": "20231120",
            "accession": "ACC004",
            "description": "Chest PA",
            "modality": "CR",
        },
        {
            "patient_id": "MRN004",
            "issuer": DEFAULT_ISSUER,
            "family_name": "Brown",
            "given_name": "Robert",
            "birth_date": "19501120",
            "sex": "M",
            "study_date": "20231120",
            "accession": "ACC004",
            "description": "Chest PA",
            "modality": "CR",
        },
    ),
]
UIDS = [generate_uid() for _ in STUDIES]
NEWEST = "20240210"
PHI = ("MRN001", "Doe", "Quincy", "Şahin", "19700101", "X-77", "555-0101", "Springfield")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc for the module, holding STUDIES (the first one with a second, PET series)."""
    # UTF-8 answers, so a name outside Latin-1 survives C-FIND and QIDO-RS.
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), DefaultEncoding="Utf8") as server:
        for uid, (instance, _) in zip(UIDS, STUDIES, strict=True):
            server.upload(study_instance(study_uid=uid, **instance))
        server.upload(study_instance(study_uid=UIDS[0], **{**STUDIES[0][0], "modality": "PT"}))
        yield server


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    store = open_store(db_url)
    yield store
    store.dispose()


def archive_for(orthanc: Orthanc, **settings: Any) -> ArchiveSettings:
    values: dict[str, Any] = {
        "name": "pacs",
        "dicom_host": "127.0.0.1",
        "dicom_port": orthanc.dicom_port,
        "called_ae": Orthanc.AE_TITLE,
        "dicomweb_url": orthanc.dicomweb_url,
        "timeout": 10,
        "issuer_of_patient_id": DEFAULT_ISSUER,
    }
    return ArchiveSettings(**{**values, **settings})


def index_rows(engine: Engine) -> dict[str, dict[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(select(*(Study.__table__.c[c] for c in RECORD_COLUMNS)))
        return {row.study_uid: dict(row._mapping) for row in rows}


def pull_state(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(PullState.protocol, PullState.last_study_date))
        return {row.protocol: row.last_study_date for row in rows}


def expected_rows() -> dict[str, dict[str, str]]:
    empty = dict.fromkeys(RECORD_COLUMNS, "")
    return {
        uid: {**empty, **row, "study_uid": uid} for uid, (_, row) in zip(UIDS, STUDIES, strict=True)
    }


@pytest.mark.parametrize("protocol", ["dicom", "dicomweb"])
def test_a_first_pull_copies_every_study_with_its_patient_data(
    engine: Engine, orthanc: Orthanc, protocol: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A page of 3 makes QIDO-RS ask for a second page (limit/offset).
    archive = archive_for(orthanc, page_size=3)
    with caplog.at_level(logging.INFO):
        result = pull_studies(engine, archive, protocol)
    assert index_rows(engine) == expected_rows()
    assert (result.counts.created, result.counts.updated, result.counts.unchanged) == (4, 0, 0)
    assert (result.since, result.queries, result.oldest, result.newest) == (
        "",
        1,
        "20231120",
        NEWEST,
    )
    assert pull_state(engine) == {protocol: NEWEST}
    logged = caplog.text
    assert "pacs" in logged
    assert not [value for value in PHI if value in logged]


def test_both_protocols_agree_and_a_second_pull_changes_nothing(
    engine: Engine, orthanc: Orthanc
) -> None:
    archive = archive_for(orthanc, window_days=365)
    first = pull_studies(engine, archive, "dicomweb")
    again = pull_studies(engine, archive, "dicom")
    assert first.counts.created == 4
    # The DICOM pull starts where its own state says (nowhere yet): it sees all four again.
    assert (again.counts.created, again.counts.updated, again.counts.unchanged) == (0, 0, 4)
    incremental = pull_studies(engine, archive, "dicom")
    assert incremental.since == NEWEST
    assert (incremental.counts.created, incremental.counts.unchanged) == (0, 2)
    assert pull_state(engine) == {"dicom": NEWEST, "dicomweb": NEWEST}
    with engine.connect() as connection:
        sources = set(connection.execute(select(Study.source)).scalars())
    assert sources == {"archive:pacs/dicomweb"}  # seen again unchanged: still its first source


@pytest.mark.parametrize("protocol", ["dicom", "dicomweb"])
def test_an_incremental_pull_asks_only_from_the_newest_date_seen(
    engine: Engine, orthanc: Orthanc, protocol: Any
) -> None:
    archive = archive_for(orthanc, first_study_date="2023-11-01", window_days=45)
    today = date(2024, 3, 15)  # the last window is open-ended: it still sees later studies
    first = pull_studies(engine, archive, protocol, today=today)
    assert first.since == "20231101" and first.queries > 1
    assert first.counts.created == 4
    assert pull_state(engine) == {protocol: NEWEST}

    same_day, newer, late_but_old = generate_uid(), generate_uid(), generate_uid()
    added = [
        orthanc.upload(
            study_instance(
                study_uid=same_day, patient_id="N1", patient_name="New^Same Day", study_date=NEWEST
            )
        ),
        orthanc.upload(
            study_instance(
                study_uid=newer, patient_id="N2", patient_name="New^Later", study_date="20240301"
            )
        ),
        # Stored late, dated before the last pull's newest date: an incremental pull skips it.
        orthanc.upload(
            study_instance(
                study_uid=late_but_old,
                patient_id="N3",
                patient_name="Old^Late",
                study_date="20231201",
            )
        ),
    ]
    try:
        second = pull_studies(engine, archive, protocol, today=today)
        assert second.since == NEWEST
        # Re-seen: the two studies of NEWEST; new: one that day and one later.
        assert (second.counts.created, second.counts.updated, second.counts.unchanged) == (2, 0, 2)
        rows = index_rows(engine)
        assert same_day in rows and newer in rows and late_but_old not in rows
        assert rows[newer]["family_name"] == "New" and rows[newer]["study_date"] == "20240301"
        assert pull_state(engine) == {protocol: "20240301"}

        since = pull_studies(engine, archive, protocol, since="20231201", today=today)
        assert since.since == "20231201" and since.counts.created == 1
        assert late_but_old in index_rows(engine)
        assert pull_state(engine) == {protocol: "20240301"}  # never moves back

        full = pull_studies(engine, archive, protocol, full=True, today=today)
        assert full.since == "20231101"
        assert (full.counts.created, full.counts.unchanged) == (0, 7)
    finally:
        for orthanc_id in added:
            orthanc.delete_study(orthanc_id)


def test_a_study_dated_in_the_future_does_not_become_the_next_start(
    engine: Engine, orthanc: Orthanc
) -> None:
    archive = archive_for(orthanc, dicom_host="")
    added = orthanc.upload(
        study_instance(patient_id="F1", patient_name="Future^Clock", study_date="20991231")
    )
    try:
        result = pull_studies(engine, archive, "dicomweb", since="20240201")
    finally:
        orthanc.delete_study(added)
    assert result.newest == "20991231"
    assert result.counts.created == 3
    assert "20240201" <= pull_state(engine)["dicomweb"] < "20991231"


def test_an_http_error_names_the_archive_and_its_url(engine: Engine, orthanc: Orthanc) -> None:
    archive = archive_for(orthanc, dicom_host="", dicomweb_url=f"{orthanc.url}/no-such-service")
    with pytest.raises(PullError) as caught:
        pull_studies(engine, archive, "dicomweb")
    assert str(caught.value) == (
        f"archive 'pacs' (DICOMweb {orthanc.url}/no-such-service): QIDO-RS answered HTTP 404"
        " Not Found"
    )
    assert pull_state(engine) == {}


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_messages() -> None:
    query = QidoQuery(ArchiveSettings(name="p", dicomweb_url="https://cw:s%40cret@pacs:443/web/"))
    assert query.base == "https://pacs:443/web"
    assert query.headers["Authorization"] == "Basic Y3c6c0BjcmV0"  # cw:s@cret


def run_cli(*args: str) -> Any:
    app = typer.Typer()
    app.command()(pull)
    return CliRunner().invoke(app, list(args))


def test_the_command_pulls_by_both_protocols_and_reports_counts(
    db_url: str, orthanc: Orthanc, tmp_path: Path
) -> None:
    folder = config_folder(
        tmp_path,
        "archives:\n"
        "  pacs:\n"
        f"    dicom_host: 127.0.0.1\n    dicom_port: {orthanc.dicom_port}\n"
        f"    called_ae: {Orthanc.AE_TITLE}\n    dicomweb_url: {orthanc.dicomweb_url}\n"
        "    first_study_date: 2023-11-01\n    window_days: 400\n",
    )
    result = run_cli("--config", str(folder), "--db", db_url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pacs (dicom): studies from 2023-11-01")
    assert "4 created, 0 updated, 0 unchanged; study dates 2023-11-20 to 2024-02-10" in lines[0]
    assert lines[1].startswith("pacs (dicomweb): studies from 2023-11-01")
    assert "0 created, 0 updated, 4 unchanged" in lines[1]
    assert "next pull starts at 2024-02-10" in lines[1]

    again = run_cli("pacs", "--config", str(folder), "--db", db_url, "--protocol", "dicomweb")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("pacs (dicomweb): studies from 2024-02-10")
    assert "0 created, 0 updated, 2 unchanged" in again.stdout


def test_an_archive_that_is_down_fails_with_its_name_and_address(
    db_url: str, tmp_path: Path
) -> None:
    port, http_port = free_port(), free_port()
    folder = config_folder(
        tmp_path,
        "archives:\n"
        "  down:\n"
        f"    dicom_host: 127.0.0.1\n    dicom_port: {port}\n    called_ae: PACS\n"
        f"    dicomweb_url: http://127.0.0.1:{http_port}/dicom-web\n    timeout: 2s\n",
    )
    result = run_cli("down", "--config", str(folder), "--db", db_url)
    assert result.exit_code == 1
    assert result.stdout == ""
    error = " ".join(result.stderr.split())
    assert f"archive 'down' (DICOM PACS@127.0.0.1:{port}): cannot connect: Connection refused" in (
        error
    )
    assert (
        f"archive 'down' (DICOMweb http://127.0.0.1:{http_port}/dicom-web): cannot connect:"
        " Connection refused" in error
    )
    assert "2 of 2 pull(s) failed" in error
    store = open_store(db_url)
    try:
        assert pull_state(store) == {} and index_rows(store) == {}
    finally:
        store.dispose()


def test_the_command_refuses_what_the_archive_does_not_have(tmp_path: Path) -> None:
    folder = config_folder(
        tmp_path, "archives:\n  web:\n    dicomweb_url: http://127.0.0.1:9/dicom-web\n"
    )
    result = run_cli("--config", str(folder), "--protocol", "dicom")
    assert result.exit_code == 2
    assert "archive 'web' has no dicom_host; it can be queried by: dicomweb" in result.stderr
    result = run_cli("other", "--config", str(folder))
    assert result.exit_code == 2
    assert "no archive 'other'" in result.stderr
    result = run_cli("--config", str(folder), "--since", "2024-02-30")
    assert result.exit_code == 2
    assert "is not a date" in result.stderr


def test_a_rejected_association_is_reported_with_the_reason() -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
    )

    scp = AE(ae_title="REALPACS")
    scp.require_called_aet = True
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        archive = ArchiveSettings(
            name="pacs", dicom_host="127.0.0.1", dicom_port=port, called_ae="WRONG", timeout=5
        )
        with pytest.raises(PullError) as caught, DicomQuery(archive):
            pass
    finally:
        server.shutdown()
    message = str(caught.value)
    assert message.startswith(f"archive 'pacs' (DICOM WRONG@127.0.0.1:{port}): association")
    assert "rejected" in message and "Called AE title not recognised" in message


def test_the_sample_configuration_declares_the_pacs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_DICOM_PORT", "11112")
    archive = load_config(Path(__file__).parent.parent / "routes").archives["pacs"]
    assert archive.protocols == ("dicom", "dicomweb")
    assert (archive.dicom_port, archive.calling_ae) == (11112, "CROSSWALK")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ("timeout: 5s", "neither dicom_host nor dicomweb_url is set"),
        ("dicom_host: pacs", "called_ae is required with dicom_host"),
        ("dicomweb_url: pacs:8042", "is not an http(s) URL"),
        ("dicomweb_url: http://pacs\n    first_study_date: 2024-13-01", "is not a date"),
        ("dicom_host: pacs\n    called_ae: A_TITLE_THAT_IS_TOO_LONG", "is not an AE title"),
    ],
)
def test_archive_settings_are_checked(tmp_path: Path, settings: str, problem: str) -> None:
    folder = config_folder(tmp_path, f"archives:\n  pacs:\n    {settings}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(folder, {})
    assert any(problem in str(p) for p in caught.value.problems), caught.value.problems


def test_names_addresses_and_windows() -> None:
    assert split_person_name("Yamada^Tarou=山田^太郎") == ("Yamada", "Tarou", "")
    assert split_person_name("") == ("", "", "")
    assert split_address("12 Rue de la Paix, Paris") == ("12 Rue de la Paix, Paris", "", "", "")
    assert split_address("1 Elm^^Boston^MA^02118^USA") == ("1 Elm", "Boston", "MA", "02118")
    assert date_windows("", date(2024, 3, 1), 7) == [("", "")]
    assert date_windows("20240301", date(2024, 3, 1), 7) == [("20240301", "")]
    assert date_windows("20240101", date(2024, 1, 20), 7) == [
        ("20240101", "20240107"),
        ("20240108", "20240114"),
        ("20240115", ""),
    ]


# The issue's examples as a PACS holds them: (instance arguments, what the index keeps).
IMPLAUSIBLE = [
    (
        {"patient_id": "OS1", "patient_name": "Fitzgerald^Owen", "birth_date": "20951022"},
        {"birth_date": "20951022", "sex": "M"},
        "birth date 20951022 is in the future",
    ),
    (
        {"patient_id": "OS2", "patient_name": "Abernathy^Clara", "birth_date": "19450493"},
        {"birth_date": "19450493", "sex": "F"},
        "birth date 19450493 is not a calendar date",
    ),
    (
        {"patient_id": "OS3", "patient_name": "Halvorsen^Ingrid", "birth_date": "19402704"},
        {"birth_date": "19402704", "sex": "F"},
        "birth date 19402704 is not a calendar date",
    ),
]
IMPLAUSIBLE_MPI = (
    "mrn,issuer,family_name,given_name,birth_date,sex\n"
    "200001,GENHOSP,HALVORSEN,INGRID,1940-04-27,F\n"
    "200003,GENHOSP,ABERNATHY,CLARA,1945-04-03,F\n"
    "200004,GENHOSP,FITZGERALD,OWEN,1995-10-22,M\n"
    "200005,GENHOSP,FITZGERALD,OWEN,1971-06-14,M\n"
)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # making them
def test_studies_with_implausible_birth_dates_are_pulled_flagged_and_reconciled(
    engine: Engine, orthanc: Orthanc, tmp_path: Path
) -> None:
    from engine.mpi.importer import MpiImport
    from engine.reconcile.run import reconcile
    from engine.reconcile.settings import ReconcilerSettings
    from engine.studies.orphans import Orphan, classify

    uids = [generate_uid() for _ in IMPLAUSIBLE]
    added = [
        orthanc.upload(
            study_instance(
                study_uid=uid, study_date="20250301", sex=kept["sex"], issuer="OTHER", **instance
            )
        )
        for uid, (instance, kept, _) in zip(uids, IMPLAUSIBLE, strict=True)
    ]
    try:
        archive = archive_for(orthanc)
        by_dicom = pull_studies(engine, archive, "dicom", since="20250301")
        by_web = pull_studies(engine, archive, "dicomweb", since="20250301")
    finally:
        for orthanc_id in added:
            orthanc.delete_study(orthanc_id)
    assert (by_dicom.counts.created, by_dicom.flagged, by_dicom.skipped) == (3, 3, 0)
    assert (by_web.counts.unchanged, by_web.flagged, by_web.skipped) == (3, 3, 0)
    rows = index_rows(engine)
    for uid, (_, kept, _) in zip(uids, IMPLAUSIBLE, strict=True):
        assert {k: rows[uid][k] for k in kept} == kept
    orphans = {o.study.study_uid: o for o in classify(engine) if isinstance(o, Orphan)}
    assert [[str(f) for f in orphans[uid].flags] for uid in uids] == [
        [flag] for _, _, flag in IMPLAUSIBLE
    ]
    mpi = tmp_path / "mpi.csv"
    mpi.write_text(IMPLAUSIBLE_MPI, encoding="utf-8")
    MpiImport(engine, mpi).run()
    reconcile(engine, ReconcilerSettings(min_em_pairs=10**9))
    from engine.mpi.tables import PatientIdentifier
    from engine.reconcile.tables import Proposal

    with engine.connect() as connection:
        best = dict(
            connection.execute(
                select(Proposal.study_uid, PatientIdentifier.value)
                .join(PatientIdentifier, PatientIdentifier.patient_id == Proposal.patient_id)
                .where(Proposal.rank == 1)
            ).all()
        )
    assert [best.get(uid) for uid in uids] == ["200004", "200003", "200001"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # making them
def test_an_answer_is_converted_as_the_pacs_recorded_it() -> None:
    from engine.studies.cfind import dataset_values
    from engine.studies.qido import json_values
    from engine.studies.query import make_record

    dataset = Dataset()
    dataset.StudyInstanceUID = "1.2.3"
    dataset.PatientBirthDate = "1945.04.93"  # the old ACR-NEMA form, and no calendar date
    dataset.PatientSex = "W"
    dataset.StudyDate = "20240230"
    record = make_record(dataset_values(dataset), "HOSP")
    assert record is not None
    assert (record.birth_date, record.sex, record.study_date) == ("19450493", "W", "20240230")
    answer = {
        "0020000D": {"vr": "UI", "Value": ["1.2.4"]},
        "00100030": {"vr": "DA", "Value": ["20951022"]},
        "00100040": {"vr": "CS", "Value": ["u"]},
    }
    record = make_record(json_values(answer), "")
    assert record is not None and (record.birth_date, record.sex) == ("20951022", "U")
    no_uid = {"00100030": {"vr": "DA", "Value": ["19450403"]}}
    assert make_record(json_values(no_uid), "") is None  # the only answer not taken


def test_a_pull_over_dicom_tls_from_a_real_orthanc(engine: Engine, tmp_path: Path) -> None:
    """Orthanc with DICOM TLS, client certificates required: the archive's `tls:` pulls by
    C-FIND over mutual TLS; an archive trusting another CA is refused with a clear error.
    (Debian's Orthanc 1.10 crashes serving HTTPS, so https QIDO-RS is tested against a
    loopback server below.)"""
    from engine.mllp.tls import ClientTLS
    from tests.certificates import Authority

    ca, other = Authority(tmp_path / "tls"), Authority(tmp_path / "tls", "Another CA")
    server = ca.issue("localhost", file="orthanc")
    client = ca.issue("crosswalk.hospital.org", server=False, file="crosswalk")
    settings = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(server.cert),
        "DicomTlsPrivateKey": str(server.key),
        "DicomTlsTrustedCertificates": str(ca.cert),
        "DicomTlsRemoteCertificateRequired": True,
    }
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc", **settings) as secure:
        secure.upload(study_instance(**STUDIES[0][0]))
        tls = ClientTLS(ca=ca.cert, cert=client.cert, key=client.key, server_name="localhost")
        result = pull_studies(engine, archive_for(secure, tls=tls), "dicom")
        assert result.counts.created == 1
        with pytest.raises(PullError, match=r"association aborted|over TLS"):
            wrong = ClientTLS(ca=other.cert, cert=client.cert, key=client.key)
            pull_studies(engine, archive_for(secure, tls=wrong), "dicom")
        with pytest.raises(PullError, match=r"over TLS|aborted"):
            pull_studies(engine, archive_for(secure), "dicom")  # plain DICOM to a TLS port


def test_qido_rs_over_https_verifies_the_archive(engine: Engine, tmp_path: Path) -> None:
    import http.server
    import json
    import ssl
    import threading

    from engine.mllp.tls import ClientTLS
    from tests.certificates import Authority

    ca, other = Authority(tmp_path / "tls"), Authority(tmp_path / "tls", "Another CA")
    server = ca.issue("localhost", file="qido")
    answer = [
        {
            "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.10.77.1"]},
            "00100020": {"vr": "LO", "Value": ["MRN777"]},
            "00080020": {"vr": "DA", "Value": ["20240105"]},
        }
    ]

    class Qido(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Qido)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"https://localhost:{httpd.server_address[1]}/dicom-web"
    try:
        archive = ArchiveSettings(
            name="pacs", dicomweb_url=url, timeout=10, tls=ClientTLS(ca=ca.cert)
        )
        assert pull_studies(engine, archive, "dicomweb").counts.created == 1
        untrusting = ArchiveSettings(
            name="pacs", dicomweb_url=url, timeout=10, tls=ClientTLS(ca=other.cert)
        )
        with pytest.raises(PullError, match="certificate verify failed"):
            pull_studies(engine, untrusting, "dicomweb")
    finally:
        httpd.shutdown()
