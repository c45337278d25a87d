"""The study index: importing a PACS' list of studies, and finding orphans and wrong patients."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from engine.csv_import.rows import RowProblem
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
from tests.support import assert_fits, run_crosswalk, store_mode  # noqa: F401  (clear and encrypted)

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
    # Only the row without a Study Instance UID is skipped; an impossible study date is kept.
    assert [(p.line, p.reason.split(":")[0]) for p in problems] == [(3, "study_uid")]
    store = open_store(db_url)
    with Session(store) as session:
        saved, kept = session.scalars(select(Study).order_by(Study.study_uid)).all()
    assert (kept.study_uid, kept.study_date) == ("1.2.840.2", "20261301")
    assert (saved.study_uid, saved.accession, saved.shown_patient_id, saved.issuer) == (
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
        saved = session.scalars(select(Study).where(Study.study_uid == "1.2.840.1")).one()
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
    # The screens name the patient it belongs to now by its MRN, not by an internal row id.
    table = run_crosswalk("studies", "orphans", "--db", db_url)
    assert "identifier of a merged patient (now 100234^^^GENHOSP)" in table.stdout
    listed = run_crosswalk("studies", "orphans", "--format", "json", "--db", db_url)
    assert json.loads(listed.stdout)["orphans"][0]["survivor_mrn"] == "100234^^^GENHOSP"


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
    assert "birth_date: PACS '1955-07-08' ≠ MPI '1970-01-01'" in table.stdout
    assert "100388^^^GENHOSP" in table.stdout.split("possible wrong-patient")[1]  # its MRN
    assert result["wrong_patient"][0]["mpi_mrn"] == "100388^^^GENHOSP"


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


def test_orphans_at_80_columns_never_split_an_id_a_date_or_an_accession(
    db_url: str, tmp_path: Path
) -> None:
    """On an 80-column terminal the lists leave out their less important columns (and say so)
    rather than fold `2026-12-0 │ 4` or an accession number across lines."""
    samples = Path(__file__).resolve().parent.parent / "samples"
    for kind, name in (("mpi", "mpi_export.csv"), ("studies", "pacs_studies.csv")):
        loaded = run_crosswalk(kind, "import", str(samples / name), "--db", db_url)
        assert loaded.returncode == 0, loaded.stderr
    narrow = run_crosswalk("studies", "orphans", "--db", db_url, columns=80)
    assert narrow.returncode == 0, narrow.stderr
    whole = [
        "ACC2025002004",
        "ACC2025003874",
        "ACC2025002790",
        "TR99001^^^GENHOSP",
        "SH-448213^^^STHOSP",
        "TRAUMA0412^^^GENHOSP",
        "101588^^^GENHOSP",
        "2025-04-19",
        "2019-08-30",
        "2025-11-06",
        "1900-01-01",
        "'1939-10-08'",
        "'1968-02-14'",
    ]
    assert_fits(narrow.stdout, 80, whole)
    assert "(left out to fit the terminal: " in narrow.stdout
    assert "19391008" not in narrow.stdout  # birth dates as YYYY-MM-DD
    wide = run_crosswalk("studies", "orphans", "--db", db_url, columns=200)
    assert "left out" not in wide.stdout
    assert_fits(wide.stdout, 200, [*whole, "family name DOE is a placeholder"])
    wrong = wide.stdout.split("possible wrong-patient studies")[1]
    assert len(wrong.splitlines()[3:]) == 3
    for line in wrong.splitlines()[3:]:  # the MPI patient is named by its MRN, never a row id
        cells = [cell.strip() for cell in line.split("│")]
        assert cells[4].endswith("^^^GENHOSP"), cells


# The examples: recorded birth dates a PACS holds that are out of range or no
# calendar date, a sex code and names that cannot be right, and one row without a UID.
IMPLAUSIBLE = [
    study("11", "OS1", "OTHERSITE", "SMITH^JOHN", "20951022", "M"),  # in the future
    study("12", "OS2", "OTHERSITE", "GARCIA^ANA", "1945-04-93", "F"),  # no 93rd of April
    study("13", "OS3", "OTHERSITE", "NGUYEN^LINH", "19402704", "W"),  # no 27th month
    study("14", "TR1", "GENHOSP", "DOE^JOHN", "1900-01-01", "M"),  # placeholders
    study("15", "OS5", "OTHERSITE", "LEE^KIM", "18400101", "male"),  # before 1850
    ",A16,OS6,OTHERSITE,PARK,MIN,,19610303,F,20261001,CT,HEAD",  # no Study Instance UID
]
FLAGS = {
    "1.2.840.11": ["birth date 20951022 is in the future"],
    "1.2.840.12": ["birth date 19450493 is not a calendar date"],
    "1.2.840.13": [
        "birth date 19402704 is not a calendar date",
        "sex W is not a sex code (M, F, O, U, A, N, X)",
    ],
    "1.2.840.14": ["family name DOE is a placeholder", "birth date 19000101 is a placeholder"],
    "1.2.840.15": ["birth date 18400101 is before 1850"],
}


def test_implausible_values_are_kept_as_recorded_and_flagged(db_url: str, tmp_path: Path) -> None:
    problems = load(db_url, tmp_path, IMPLAUSIBLE)
    assert [p.reason for p in problems] == [
        "study_uid: empty; every row needs the Study Instance UID"
    ]
    assert problems[0].describe(Path("s.csv")).startswith("s.csv:7: study_uid:")
    store = open_store(db_url)
    with Session(store) as session:
        saved = {s.study_uid: s for s in session.scalars(select(Study))}
    assert {uid: (s.birth_date, s.sex) for uid, s in saved.items()} == {
        "1.2.840.11": ("20951022", "M"),
        "1.2.840.12": ("19450493", "F"),  # only the separators dropped
        "1.2.840.13": ("19402704", "W"),
        "1.2.840.14": ("19000101", "M"),
        "1.2.840.15": ("18400101", "M"),
    }
    found = list(classify(store))
    store.dispose()
    assert all(isinstance(o, Orphan) for o in found)
    assert {o.study.study_uid: [str(f) for f in o.flags] for o in found} == FLAGS


def test_what_the_index_cannot_hold_is_left_out_with_a_note(store: Engine, tmp_path: Path) -> None:
    """Dates and sexes in other forms are kept as recorded (and flagged); only what no column
    can hold (over-long text, NUL) is cut or left out, with a note."""
    notes: list[RowProblem] = []
    rows = [
        "1.2.840.21,A21,OS1,OTHERSITE,SMITH,JOHN,,04/27/1940,female,2026-10-01T10:15:00,CT,",
        f"1.2.840.22,A22,OS2,OTHERSITE,{'X' * 120},ANA,,1945.04.03,Frau,20261001,CT,",
        "1.2.840.23,A23,OS3,OTHERSITE,SM\x00ITH,ANA,,19450403,F,20261001,CT,",  # PostgreSQL
        f"1.2.840.24,A24,OS4,OTHERSITE,DOE,ANA,,{'9' * 70},{'Q' * 20},20261001,CT,",
    ]
    path = write(tmp_path, "s.csv", STUDY_HEADER, rows)
    job = StudyImport(store, path, on_note=notes.append)
    assert job.check() is None  # --strict: nothing to refuse, and notes wait for the import
    assert notes == []
    report = job.run()
    assert (report.created, report.skipped) == (4, 0)
    assert [n.describe(path).split(": ", 1)[1] for n in notes] == [
        "family_name: longer than 100 characters; the first 100 are kept",
        "family_name: holds a NUL character (0x00), which is left out",
        "birth_date: longer than 64 characters and no date; the study is kept without it",
        "sex: longer than 16 characters and no sex code; the study is kept without it",
    ]
    with Session(store) as session:
        saved = {s.study_uid: s for s in session.scalars(select(Study))}
    first, second = saved["1.2.840.21"], saved["1.2.840.22"]
    assert (first.birth_date, first.sex, first.study_date) == ("04/27/1940", "F", "20261001")
    assert (second.birth_date, second.sex, len(second.family_name)) == ("19450403", "Frau", 100)
    assert saved["1.2.840.23"].family_name == "SMITH"
    assert (saved["1.2.840.24"].birth_date, saved["1.2.840.24"].sex) == ("", "")


def test_flags_say_why_a_value_cannot_be_right() -> None:
    from datetime import date

    from engine.reconcile.settings import ReconcilerSettings
    from engine.studies.flags import Recorded, recorded_date, recorded_sex, study_flags

    today = date(2026, 12, 4)

    def flags(settings: ReconcilerSettings | None = None, **values: str) -> list[str]:
        return [str(f) for f in study_flags(Recorded(**values), settings, today=today)]

    assert flags(birth_date="20261205", sex="U", study_date="20261204") == []  # a day's grace
    assert flags(birth_date="20261206") == ["birth date 20261206 is in the future"]
    assert flags(birth_date="1945") == ["birth date 1945 is not a date (YYYYMMDD)"]
    assert flags(study_date="20240230") == ["study date 20240230 is not a calendar date"]
    assert flags(family_name="Trauma Alpha", given_name="Baby") == [
        "family name 'Trauma Alpha' is a placeholder",
        "given name Baby is a placeholder",
    ]
    # The placeholders are the reconciler's settings, not a list of their own.
    mine = ReconcilerSettings(placeholder_names=["NEMO"], placeholder_birth_dates=["19700101"])
    assert flags(mine, family_name="DOE", birth_date="19700101") == [
        "birth date 19700101 is a placeholder"
    ]
    assert flags(mine, family_name="Nemo") == ["family name Nemo is a placeholder"]
    assert [recorded_date(t) for t in ("19450493", " 1945-04-93 ", "1945/04/03", "")] == [
        "19450493",
        "19450493",
        "19450403",
        "",
    ]
    assert recorded_date("27.04.1940") == "27.04.1940"  # which is the day? not guessed: kept
    assert flags(birth_date="27.04.1940") == ["birth date '27.04.1940' is not a date (YYYYMMDD)"]
    assert recorded_date("9" * 65) is None  # more than the index holds
    assert [recorded_sex(t) for t in ("m", "Female", "w", "")] == ["M", "F", "W", ""]
    assert recorded_sex("Frau") == "Frau"
    assert recorded_sex("Q" * 17) is None


def test_birth_dates_agree_across_a_century_slip() -> None:
    assert birth_dates_agree("20451022", "19451022")
    assert birth_dates_agree("19402704", "19400427")  # day and month swapped, impossible
    assert birth_dates_agree("19450493", "19450403")  # one digit
    assert not birth_dates_agree("21451022", "19451022")
    assert birth_dates_agree("UNKNOWN", "19451022")  # no date at all: no evidence
    assert birth_dates_agree("27/04/1940", "19400427")


def test_a_study_list_with_a_quote_left_open_loses_only_that_line(
    db_url: str, tmp_path: Path
) -> None:
    """The rows after a line with an unterminated quote are imported, each on its own; the
    line itself and a row with too few columns are reported with their line and skipped."""
    rows = [
        study("1", "100234", "GENHOSP", "SMITH^JOHN", "1980-03-04", "M"),
        '1.2.840.2,ACC2,100388,GENHOSP,"GARCIA,ANA,,1970-01-01,F,20261001,CT,HEAD',
        study("3", "200111", "GENHOSP", "NGUYEN^LINH", "1990-05-06", "F"),
        "1.2.840.4,ACC4,X77",
        study("5", "X77", "EPI", "LEE^KIM", "1960-02-02", "M"),
    ]
    path = write(tmp_path, "studies.csv", STUDY_HEADER, rows)
    result = run_crosswalk("studies", "import", str(path), "--db", db_url)
    assert result.returncode == 1
    assert f"{path}:3: column 5 (family_name): a quoted value is not closed" in result.stderr
    assert f"{path}:5: 3 values for 12 columns in the header" in result.stderr
    words = " ".join(result.stdout.split())
    assert "3 row(s) imported: 3 created" in words and "2 bad row(s) skipped" in words
    store = open_store(db_url)
    with Session(store) as session:
        uids = sorted(session.scalars(select(Study.study_uid)))
    store.dispose()
    assert uids == ["1.2.840.1", "1.2.840.3", "1.2.840.5"]


def test_the_cli_keeps_flagged_rows_and_fails_only_for_rows_it_could_not_take(
    db_url: str, tmp_path: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_crosswalk(*args, "--db", db_url)

    flagged = write(tmp_path, "flagged.csv", STUDY_HEADER, IMPLAUSIBLE[:5])
    imported = run("studies", "import", str(flagged))
    assert imported.returncode == 0, imported.stderr
    assert (
        "5 row(s) imported: 5 created, 0 updated, 0 unchanged; 5 kept with flags"
        " (birth date: 5, family name: 1, sex: 1); 0 bad row(s) skipped"
    ) in " ".join(imported.stdout.split())
    with_bad = write(tmp_path, "bad.csv", STUDY_HEADER, IMPLAUSIBLE)
    again = run("studies", "import", str(with_bad))
    assert again.returncode == 1
    assert f"{with_bad}:7: study_uid: empty" in again.stderr
    assert "0 created, 0 updated, 5 unchanged" in again.stdout
    assert "1 bad row(s) skipped" in " ".join(again.stdout.split())

    listed = run("studies", "orphans", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    shown = {o["study_uid"]: o["flags"] for o in json.loads(listed.stdout)["orphans"]}
    assert shown == FLAGS
    as_csv = run("studies", "orphans", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows[1]["flags"] == "birth date 19450493 is not a calendar date"
    assert rows[2]["flags"] == FLAGS["1.2.840.13"][0] + "; " + FLAGS["1.2.840.13"][1]
    table = run("studies", "orphans")
    assert "orphaned studies: 5" in table.stdout
    assert "1945-04-93" in table.stdout  # as recorded
    words = " ".join(table.stdout.split())
    assert "flags" in words and "is not a calendar" in words
