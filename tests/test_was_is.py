"""`review export-was-is --format`: the approvals in the column layouts migration tools import."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import Engine

from engine.config.loader import load_config
from tests.support import run_crosswalk as run
from tests.test_reconcile import study
from tests.test_review import STUDIES, approve, folder, prepared, proposal_of

# X77 is the temporary id of two different people (a reused trauma registration).
REUSED = study("1.4", "X77", "KOWALSKI^TERESA", "1954-11-03", "F", accession="ACC4")


@pytest.fixture
def approved(store: Engine, db_url: str, tmp_path: Path) -> str:
    """Three approvals: 1.1 (X77 → 100234), 1.2 (X78 → 100388), 1.4 (X77 → 100388)."""
    prepared(store, tmp_path, [*STUDIES, REUSED])
    config = load_config(folder(tmp_path))
    for uid in ("1.1", "1.2", "1.4"):
        approve(store, config, proposal_of(store, uid), "alice")
    return db_url


def exported(tmp_path: Path, db_url: str, layout: str, code: int = 0) -> list[dict[str, str]]:
    path = tmp_path / f"{layout}.csv"
    done = run("review", "export-was-is", str(path), "--format", layout, "--db", db_url)
    assert done.returncode == code, done.stdout + done.stderr
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def test_the_migration_layout_has_one_row_per_study(tmp_path: Path, approved: str) -> None:
    found = exported(tmp_path, approved, "migration")
    assert list(found[0]) == [
        "old_patient_id",
        "old_issuer",
        "new_patient_id",
        "new_issuer",
        "study_instance_uid",
        "accession_number",
    ]
    assert [tuple(row.values()) for row in found] == [
        ("X77", "OTHERSITE", "100234", "GENHOSP", "1.1", ""),
        ("X78", "OTHERSITE", "100388", "GENHOSP", "1.2", ""),
        ("X77", "OTHERSITE", "100388", "GENHOSP", "1.4", "ACC4"),
    ]


def test_the_patient_map_leaves_out_an_id_approved_into_two_patients_and_says_so(
    tmp_path: Path, approved: str
) -> None:
    path = tmp_path / "map.csv"
    done = run("review", "export-was-is", str(path), "--format", "patient-map", "--db", approved)
    assert done.returncode == 1
    said = " ".join((done.stdout + done.stderr).split())
    assert "X77^^^OTHERSITE was approved into 2 patients" in said
    assert "100234^^^GENHOSP, 100388^^^GENHOSP" in said and "--format migration" in said
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert rows == [
        {
            "old_patient_id": "X78",
            "old_issuer": "OTHERSITE",
            "new_patient_id": "100388",
            "new_issuer": "GENHOSP",
        }
    ]


def test_the_dicom_tags_layout_carries_what_a_merge_target_sets(
    tmp_path: Path, approved: str
) -> None:
    first = exported(tmp_path, approved, "dicom-tags")[0]
    assert first == {
        "StudyInstanceUID": "1.1",
        "AccessionNumber": "",
        "OtherPatientIDs": "X77",
        "PatientID": "100234",
        "IssuerOfPatientID": "GENHOSP",
        "PatientName": "SMITH^WILLIAM^J",
        "PatientBirthDate": "19580314",
        "PatientSex": "M",
    }


def test_the_default_layout_is_the_crosswalk_as_before(tmp_path: Path, approved: str) -> None:
    path = tmp_path / "was-is.csv"
    assert run("review", "export-was-is", str(path), "--db", approved).returncode == 0
    first = next(csv.DictReader(path.open(encoding="utf-8")))
    assert (first["old_patient_id"], first["mrn"], first["approved_by"]) == (
        "X77",
        "100234",
        "alice",
    )
    assert first["delivery"] == "pacs: queued"


def test_an_unknown_layout_is_refused_with_the_choices(tmp_path: Path, approved: str) -> None:
    done = run(
        "review", "export-was-is", str(tmp_path / "x.csv"), "--format", "excel", "--db", approved
    )
    assert done.returncode == 2 and "patient-map" in done.stderr
    assert not (tmp_path / "x.csv").exists()
