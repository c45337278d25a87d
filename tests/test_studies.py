"""The study index: importing a PACS' list of studies, and finding orphans and wrong patients."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.csv_rows import RowProblem
from engine.mpi.importer import MpiImport
from engine.store.database import open_store
from engine.studies.importer import StudyImport
from engine.studies.orphans import (
    IdentifierHolder,
    Orphan,
    StudySummary,
    WrongPatient,
    birth_dates_agree,
    classify,
    conflicts,
)
from engine.studies.tables import Study
from tests.support import run_crosswalk

STUDY_HEADER = (
    "study_uid,accession,patient_id,issuer,family_name,given_name,middle_name,birth_date,sex,"
    "study_date,modality,description\n"
)
MPI_HEADER = "mrn,issuer,family_name,given_name,birth_date,sex\n"
MPI = [
    "100234,GENHOSP,SMITH,JOHN,1980-03-04,M",
    "100388,GENHOSP,GARCIA,ANA,1970-01-01,F",
    "200111,GENHOSP,NGUYEN,LINH,1990-05-06,F",
    "X77,EPI,LEE,KIM,1960-02-02,M",
    "X77,GENHOSP,PARK,MIN,1961-03-03,F",
]


def write(tmp_path: Path, name: str, header: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def load(db_url: str, tmp_path: Path, studies: list[str]) -> list[RowProblem]:
    store = open_store(db_url)
    problems: list[RowProblem] = []
    MpiImport(store, write(tmp_path, "mpi.csv", MPI_HEADER, MPI)).run()
    StudyImport(
        store, write(tmp_path, "studies.csv", STUDY_HEADER, studies), on_problem=problems.append
    ).run()
    store.dispose()
    return problems


def study(uid: str, patient: str, issuer: str, name: str, born: str, sex: str) -> str:
    family, given = name.split("^")
    return (
        f"1.2.840.{uid},ACC{uid},{patient},{issuer},{family},{given},,{born},{sex},20261001,CT,HEAD"
    )


def test_importing_studies_keeps_what_the_pacs_recorded(db_url: str, tmp_path: Path) -> None:
    rows = [
        study("1", "100234", "GENHOSP", "Smith^John", "1980-03-04", "m"),
        "not-a-uid,A,1,GENHOSP,X,Y,,,,,,",
        "1.2.840.2,A2,1,GENHOSP,X,Y,,,,2026-13-01,MR,",
        study("1", "100234", "GENHOSP", "SMITH^JOHN", "1980-03-04", "M"),  # the same UID again
    ]
    problems = load(db_url, tmp_path, rows)
    assert [(p.line, p.reason.split(":")[0]) for p in problems] == [
        (3, "study_uid"),
        (4, "study_date"),
    ]
    store = open_store(db_url)
    with Session(store) as session:
        (saved,) = session.scalars(select(Study)).all()
    assert (saved.study_uid, saved.accession, saved.patient_id, saved.issuer) == (
        "1.2.840.1",
        "ACC1",
        "100234",
        "GENHOSP",
    )
    assert (saved.family_name, saved.birth_date, saved.sex, saved.study_date) == (
        "SMITH",
        "19800304",
        "M",
        "20261001",
    )
    assert saved.source == "import studies.csv" and saved.modality == "CT"
    first_seen = saved.first_seen
    again = StudyImport(store, write(tmp_path, "again.csv", STUDY_HEADER, rows[:1])).run()
    assert (again.updated, again.created) == (1, 0)  # the name's case changed back
    with Session(store) as session:
        (saved,) = session.scalars(select(Study)).all()
    assert saved.first_seen == first_seen and saved.last_seen > first_seen
    store.dispose()


def test_orphans_and_wrong_patients_are_told_apart(db_url: str, tmp_path: Path) -> None:
    rows = [
        study("1", "100234", "GENHOSP", "SMITH^JOHN", "1980-03-04", "M"),  # matches
        study("2", "TR555", "GENHOSP", "DOE^JOHN", "1900-01-01", "M"),  # unknown id
        study("3", "", "", "UNKNOWN^PATIENT", "", ""),  # no id
        study("4", "100234", "OTHERSITE", "SMITH^JOHN", "1980-03-04", "M"),  # other issuer
        study("5", "X77", "", "LEE^KIM", "1960-02-02", "M"),  # two patients hold X77
        study("6", "100388", "", "GARCIA^ANA", "1970-01-01", "F"),  # no issuer, one holder
        study("7", "100388", "GENHOSP", "BROWN^PETER", "1955-07-08", "M"),  # wrong patient
        study("8", "200111", "GENHOSP", "NGUYEN^L", "1990-06-05", "U"),  # tolerated
    ]
    assert load(db_url, tmp_path, rows) == []
    store = open_store(db_url)
    found = list(classify(store))
    store.dispose()
    orphans = {o.study.study_uid[-1]: o.reason for o in found if isinstance(o, Orphan)}
    assert orphans == {
        "2": "unknown identifier",
        "3": "no patient id",
        "4": "unknown identifier",
        "5": "ambiguous: 2 patients hold this id under different issuers",
    }
    (wrong,) = [w for w in found if isinstance(w, WrongPatient)]
    assert wrong.study.study_uid == "1.2.840.7"
    assert [c.field for c in wrong.conflicts] == ["family_name", "given_name", "birth_date", "sex"]


def test_the_identifier_of_a_merged_patient_is_an_orphan(db_url: str, tmp_path: Path) -> None:
    from engine.mpi.records import MpiRecords
    from engine.store.database import raw_transaction
    from engine.store.fastsql import Statements

    assert load(db_url, tmp_path, [study("1", "200111", "GENHOSP", "NGUYEN^LINH", "", "")]) == []
    store = open_store(db_url)
    with raw_transaction(store) as cursor:  # what an A40 of 200111 into 100234 does
        records = MpiRecords(cursor, Statements(store))
        (_, merged), (_, survivor) = (
            records.owner("200111", "GENHOSP"),
            records.owner("100234", "GENHOSP"),
        )
        records.move_identifiers(merged, survivor)
        records.set_merged(merged, survivor)
    (orphan,) = classify(store)
    store.dispose()
    assert isinstance(orphan, Orphan)
    assert orphan.reason == "identifier of a merged patient" and orphan.survivor == survivor


SUMMARY = StudySummary("1", "", "1", "", "SMITH", "JOHN", "", "19800304", "M", "", "", "")
PATIENT = IdentifierHolder(1, None, None, "SMITH", "JOHN", "Q", "19800304", "M")


@pytest.mark.parametrize(
    ("change", "aliases", "expected"),
    [
        ({"family_name": "SMYTH"}, set(), []),  # a typo
        ({"family_name": "JONES"}, set(), ["family_name"]),
        ({"family_name": "JONES"}, {"JONES"}, []),  # a previous name or alias
        ({"family_name": "JOHN", "given_name": "SMITH"}, set(), []),  # swapped
        ({"given_name": "J"}, set(), []),  # an initial
        ({"given_name": "PETER"}, set(), ["given_name"]),
        ({"given_name": "Q", "middle_name": "JOHN"}, set(), []),  # given and middle swapped
        ({"given_name": "PETER", "middle_name": "Q"}, set(), ["given_name"]),  # twins share Q
        ({"family_name": "SMITH-JONES"}, set(), []),  # a double family name
        ({"family_name": "JONES SMITH"}, set(), []),
        ({"given_name": "Jöhn"}, set(), []),  # accents
        ({"birth_date": "19800403"}, set(), []),  # day and month swapped
        ({"birth_date": "19800305"}, set(), []),  # one digit
        ({"birth_date": "19810405"}, set(), ["birth_date"]),
        ({"birth_date": ""}, set(), []),  # missing is no conflict
        ({"sex": "F"}, set(), ["sex"]),
        ({"sex": "U"}, set(), []),
    ],
)
def test_the_conflict_tolerance(
    change: dict[str, str], aliases: set[str], expected: list[str]
) -> None:
    from dataclasses import replace

    found = conflicts(replace(SUMMARY, **change), PATIENT, aliases)
    assert [c.field for c in found] == expected


def test_birth_dates_agree_within_one_typo() -> None:
    assert birth_dates_agree("19800304", "19800304")
    assert birth_dates_agree("19800304", "19800403")
    assert not birth_dates_agree("19800304", "19900403")


def test_the_cli_imports_studies_and_lists_orphans(db_url: str, tmp_path: Path) -> None:
    mpi = write(tmp_path, "mpi.csv", MPI_HEADER, MPI)
    studies = write(
        tmp_path,
        "s.csv",
        STUDY_HEADER,
        [
            study("1", "TR9", "GENHOSP", "DOE^JOHN", "", "M"),
            study("2", "100388", "GENHOSP", "BROWN^PETER", "1955-07-08", "M"),
            "1.2.3,,,,,,,,,,,",
        ],
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_crosswalk(*args, "--db", db_url)

    assert run("mpi", "import", str(mpi)).returncode == 0
    imported = run("studies", "import", str(studies))
    assert imported.returncode == 0, imported.stderr
    assert "3 row(s) imported: 3 created" in imported.stdout
    listed = run("studies", "orphans", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    result = json.loads(listed.stdout)
    assert [(o["study_uid"], o["reason"]) for o in result["orphans"]] == [
        ("1.2.840.1", "unknown identifier"),
        ("1.2.3", "no patient id"),
    ]
    assert [w["study_uid"] for w in result["wrong_patient"]] == ["1.2.840.2"]
    table = run("studies", "orphans")
    assert "orphaned studies: 2" in table.stdout
    assert "possible wrong-patient studies: 1" in table.stdout
    assert "birth_date: PACS '19550708' ≠ MPI '19700101'" in table.stdout


def test_the_sample_exports_show_typical_orphans_and_wrong_patients(
    db_url: str, tmp_path: Path
) -> None:
    samples = Path(__file__).resolve().parent.parent / "samples"
    store = open_store(db_url)
    assert MpiImport(store, samples / "mpi_export.csv").run().created == 20
    assert StudyImport(store, samples / "pacs_studies.csv").run().created == 15
    found = list(classify(store))
    store.dispose()
    orphans = [o.study.accession for o in found if isinstance(o, Orphan)]
    assert orphans == [
        "ACC2025002004",  # trauma id TR99001 (merged by samples/adt_a40_merge.hl7)
        "ACC2025002005",
        "ACC2025002217",  # 100921: THOMPSON's MRN 100912 with two digits swapped
        "",  # another site's MRN
        "ACC2025003012",  # no patient id
        "ACC2025003874",  # trauma id never reconciled
    ]
    wrong = {
        w.study.accession: [c.field for c in w.conflicts]
        for w in found
        if isinstance(w, WrongPatient)
    }
    assert wrong == {
        "ACC2025002790": ["given_name"],  # the twin sister
        "ACC2025003300": ["birth_date"],  # father and son, both WILLIAM HENRY DAVIS
        "ACC2025004133": ["sex"],
    }
