"""Loading an MPI export: upserts by (issuer, mrn), bad rows reported and skipped whole."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.csv_import.rows import CsvError, RowProblem
from engine.mpi.importer import MpiImport, event_time_of
from engine.mpi.queries import patients_with_identifier, view
from engine.mpi.tables import Patient, PatientIdentifier
from engine.store.database import open_store
from tests.support import assert_fits, run_crosswalk, store_mode  # noqa: F401  (clear and encrypted)

HEADER = (
    "mrn,issuer,family_name,given_name,middle_name,birth_date,sex,street,city,state,"
    "postal_code,phone\n"
)
GOOD = [
    "100234,GENHOSP,SMITH,JOHN,Q,1980-03-04,M,12 MAIN ST,SPRINGFIELD,IL,62701,(217)555-0100",
    "100388,GENHOSP,GARCÍA,ANA,,19700101,female,,,,,",
    "E4455,EPI,NGUYEN,LINH,,,U,,,,,",
]


def export(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "mpi.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def run_import(db_url: str, path: Path, **options: object) -> tuple[object, list[RowProblem]]:
    problems: list[RowProblem] = []
    store = open_store(db_url)
    try:
        report = MpiImport(store, path, on_problem=problems.append, **options).run()  # type: ignore[arg-type]
    finally:
        store.dispose()
    return report, problems


def patient(db_url: str, mrn: str, issuer: str = "GENHOSP"):  # type: ignore[no-untyped-def]
    store = open_store(db_url)
    try:
        (patient_id,) = patients_with_identifier(store, mrn, issuer)
        return view(store, patient_id)
    finally:
        store.dispose()


def test_an_export_creates_patients_with_their_identifiers(db_url: str, tmp_path: Path) -> None:
    report, problems = run_import(db_url, export(tmp_path, *GOOD), as_of="20261120060000.000000")
    assert problems == []
    assert (report.rows, report.created, report.skipped) == (3, 3, 0)  # type: ignore[attr-defined]
    smith = patient(db_url, "100234")
    p = smith.patient
    assert (p.family_name, p.given_name, p.middle_name, p.birth_date, p.sex) == (
        "SMITH",
        "JOHN",
        "Q",
        "19800304",
        "M",
    )
    assert (p.street, p.city, p.state, p.postal_code, p.phone) == (
        "12 MAIN ST",
        "SPRINGFIELD",
        "IL",
        "62701",
        "(217)555-0100",
    )
    assert [(i.shown_value, i.authority, i.type_code) for i in smith.identifiers] == [
        ("100234", "GENHOSP", "MR")
    ]
    assert [(e.kind, e.event_time, e.message_id) for e in smith.events] == [
        ("created", "20261120060000.000000", None)
    ]
    assert smith.events[0].command == "mpi import mpi.csv"
    garcia = patient(db_url, "100388").patient
    assert (garcia.family_name, garcia.birth_date, garcia.sex) == ("GARCÍA", "19700101", "F")
    assert patient(db_url, "E4455", "EPI").patient.birth_date == ""


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (",GENHOSP,X,Y,,,,,,,,", "mrn: empty"),
        ("1,GENHOSP,X,Y,,1980-02-30,,,,,,", "birth_date: '1980-02-30' is not a calendar date"),
        ("1,GENHOSP,X,Y,,03/04/1980,,,,,,", "birth_date: '03/04/1980' is not a date"),
        ("1,GENHOSP,X,Y,,2999-01-01,,,,,,", "birth_date: '2999-01-01' is out of range"),
        ("1,GENHOSP,X,Y,,,Q,,,,,", "sex: 'Q' is not a sex code"),
        ("1,GENHOSP," + "X" * 101 + ",Y,,,,,,,,", "family_name: longer than 100 characters"),
        ("7" * 101 + ",GENHOSP,X,Y,,,,,,,,", "mrn: longer than 100 characters"),
        ("1," + "H" * 101 + ",X,Y,,,,,,,,", "issuer: longer than 100 characters"),
        ("1\x00,GENHOSP,X,Y,,,,,,,,", "mrn: holds a NUL character (0x00)"),
        ("1,GENHOSP,SM\x00ITH,Y,,,,,,,,", "family_name: holds a NUL character (0x00)"),
        ("1,GENHOSP,X,Y,,,," + "S" * 201 + ",,,,", "street: longer than 200 characters"),
        ("1,GENHOSP,X,Y,,,,,,,,,extra", "13 values for 12 columns"),
        # The row is not in the header's shape, even when the value left over is empty.
        ("1,GENHOSP,X,Y,,,,,,,,,", "13 values for 12 columns in the header"),
        ("300,SHORT,ROW", "3 values for 12 columns in the header; the row is not imported"),
        # A quote left open is an error of its line: the next row is still imported.
        (
            '200,"QUOTE,BAD,EVE,,1981-01-01,F,,,,,',
            "column 2 (issuer): a quoted value is not closed on this line",
        ),
        ('1,GENHOSP,"SMITH"S,Y,,,,,,,,', "column 3 (family_name): a closing quote is followed"),
    ],
)
def test_a_bad_row_is_reported_with_its_line_and_skipped_whole(
    db_url: str, tmp_path: Path, row: str, reason: str
) -> None:
    report, problems = run_import(db_url, export(tmp_path, GOOD[0], row, GOOD[1]))
    assert [(p.line, p.reason[: len(reason)]) for p in problems] == [(3, reason)]
    assert (report.created, report.skipped) == (2, 1)  # type: ignore[attr-defined]
    store = open_store(db_url)
    with Session(store) as session:
        assert session.scalar(select(func.count(Patient.id))) == 2
        assert session.scalar(select(func.count(PatientIdentifier.id))) == 2
    store.dispose()


def test_a_long_file_name_is_cut_to_fit_the_history(db_url: str, tmp_path: Path) -> None:
    """The command recorded in each patient's history is at most 200 characters."""
    name = "m" * 240 + ".csv"
    report, problems = run_import(db_url, export(tmp_path, GOOD[0], name=name))
    assert problems == [] and report.created == 1  # type: ignore[attr-defined]
    again, _ = run_import(db_url, export(tmp_path, GOOD[0].replace("SMITH", "JONES"), name=name))
    assert again.updated == 1  # type: ignore[attr-defined]
    commands = [e.command for e in patient(db_url, "100234").events]
    assert commands == [f"mpi import {name}"[:200]] * 2


def test_a_row_that_is_not_utf8_is_reported_not_the_file(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        HEADER.encode() + b"1,GENHOSP,M\xfcLLER,ANNA,,,,,,,,\n" + GOOD[0].encode() + b"\n"
    )
    report, problems = run_import(db_url, path)
    assert [(p.line, p.reason) for p in problems] == [(2, "the row is not valid utf-8-sig text")]
    assert report.created == 1  # type: ignore[attr-defined]
    report, problems = run_import(db_url, path, encoding="latin-1")
    assert problems == [] and patient(db_url, "1").patient.family_name == "MüLLER"


def test_the_header_is_required_and_names_its_missing_column(tmp_path: Path) -> None:
    path = export(tmp_path, "SMITH,JOHN", header="family_name,given_name\n")
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(CsvError, match=r"mpi.csv:1: the header lacks the required column\(s\) mrn"):
        MpiImport(store, path).run()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CsvError, match="the file is empty"):
        MpiImport(store, empty).run()


def test_optional_columns_may_be_missing_and_unknown_ones_are_listed(
    db_url: str, tmp_path: Path
) -> None:
    path = export(tmp_path, "7001,Ng,1999-12-31,x", header="MRN , Family_Name,birth_date,ward\n")
    report, problems = run_import(db_url, path, issuer="GENHOSP")
    assert problems == [] and report.unknown_columns == ["ward"]  # type: ignore[attr-defined]
    ng = patient(db_url, "7001").patient
    assert (ng.family_name, ng.birth_date, ng.given_name) == ("Ng", "19991231", "")


def test_importing_again_updates_changes_and_keeps_history(db_url: str, tmp_path: Path) -> None:
    run_import(db_url, export(tmp_path, *GOOD), as_of="20261101000000.000000")
    married = GOOD[0].replace("SMITH,JOHN", "JONES,JOHN").replace("12 MAIN ST", "9 ELM ST")
    report, problems = run_import(
        db_url, export(tmp_path, married, *GOOD[1:], name="b.csv"), as_of="20261120000000.000000"
    )
    assert problems == []
    assert (report.created, report.updated, report.unchanged) == (0, 1, 2)  # type: ignore[attr-defined]
    smith = patient(db_url, "100234")
    assert (smith.patient.family_name, smith.patient.street) == ("JONES", "9 ELM ST")
    assert [(n.kind, n.family_name) for n in smith.names] == [("previous", "SMITH")]
    assert smith.events[-1].kind == "updated"
    assert "family_name" in smith.events[-1].detail and "street" in smith.events[-1].detail
    assert smith.events[-1].command == "mpi import b.csv"


def test_an_export_older_than_the_mpi_does_not_override_it(db_url: str, tmp_path: Path) -> None:
    run_import(db_url, export(tmp_path, GOOD[0]), as_of="20261120000000.000000")
    older = GOOD[0].replace("12 MAIN ST", "1 OLD RD")
    report, _ = run_import(
        db_url, export(tmp_path, older, name="old.csv"), as_of="20261001000000.000000"
    )
    assert report.stale == 1  # type: ignore[attr-defined]
    assert patient(db_url, "100234").patient.street == "12 MAIN ST"


def test_a_repeated_mrn_in_one_file_is_created_then_updated(db_url: str, tmp_path: Path) -> None:
    again = GOOD[0].replace("(217)555-0100", "(217)555-0199")
    report, problems = run_import(db_url, export(tmp_path, GOOD[0], again))
    assert problems == []
    assert (report.created, report.updated) == (1, 1)  # type: ignore[attr-defined]
    assert patient(db_url, "100234").patient.phone == "(217)555-0199"


def test_strict_checks_everything_first_and_imports_nothing_on_a_bad_row(
    db_url: str, tmp_path: Path
) -> None:
    path = export(tmp_path, GOOD[0], "1,GENHOSP,X,Y,,1980-13-01,,,,,,", GOOD[1])
    store = open_store(db_url)
    job = MpiImport(store, path)
    first = job.check()
    assert first is not None and first.line == 3 and "birth_date" in first.reason
    with Session(store) as session:
        assert session.scalar(select(func.count(Patient.id))) == 0
    store.dispose()


def cli(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    return run_crosswalk(*args, "--db", db_url)


def test_the_cli_imports_shows_and_searches(db_url: str, tmp_path: Path) -> None:
    path = export(tmp_path, *GOOD, "9,GENHOSP,X,Y,,19800230,,,,,,")
    result = cli("mpi", "import", str(path), db_url=db_url)
    assert result.returncode == 1, result.stderr  # one row was bad
    assert f"{path}:5: birth_date: '19800230' is not a calendar date" in result.stderr
    assert "4 row(s)" not in result.stdout
    assert "3 row(s) imported: 3 created, 0 updated, 0 unchanged; 1 bad row(s) skipped" in (
        result.stdout
    )

    shown = cli("mpi", "show", "100234", db_url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert "JOHN Q SMITH" in shown.stdout and "born 1980-03-04" in shown.stdout
    assert "mpi import" in shown.stdout  # the history names the command

    found = cli("mpi", "search", "--name", "smi", "--format", "json", db_url=db_url)
    assert [p["identifiers"] for p in json.loads(found.stdout)] == [["100234^^^GENHOSP"]]
    by_date = cli("mpi", "search", "--birth-date", "1970-01-01", db_url=db_url)
    assert "GARCÍA, ANA" in by_date.stdout and "100388^^^GENHOSP" in by_date.stdout
    missing = cli("mpi", "show", "NOPE", db_url=db_url)
    assert missing.returncode == 1 and "no patient has the identifier NOPE" in missing.stderr


def test_the_cli_strict_import_stops_at_the_first_bad_row(db_url: str, tmp_path: Path) -> None:
    path = export(tmp_path, GOOD[0], "1,GENHOSP,X,Y,,,Z,,,,,", "2,GENHOSP,X,Y,,,Z,,,,,")
    result = cli("mpi", "import", "--strict", str(path), db_url=db_url)
    assert result.returncode == 1
    assert result.stderr.count("is not a sex code") == 1 and f"{path}:3:" in result.stderr
    assert "nothing was imported" in result.stderr
    assert cli("mpi", "show", "100234", db_url=db_url).returncode == 1


def test_the_cli_says_which_lines_are_not_in_the_headers_shape(db_url: str, tmp_path: Path) -> None:
    """An unterminated quote, a quote followed by text, too few or too many values: each line is
    reported with its column and skipped; every other row is imported, none is merged into
    another, and no patient is made of a line's text."""
    path = export(
        tmp_path,
        GOOD[0],
        '200,"QUOTE,BAD,EVE,,1981-01-01,F,,,,,',
        GOOD[1],
        '201,GENHOSP,"LEE"ANN,SUE,,,,,,,,',
        "300,SHORT,ROW",
        "301,GENHOSP,SMITH, JR,JOHN,,1980-03-04,M,,,,,",
        GOOD[2],
        '"302,GENHOSP,OPEN,LAST,,,,,,,,',
    )
    result = cli("mpi", "import", str(path), db_url=db_url)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    expected = [
        f"{path}:3: column 2 (issuer): a quoted value is not closed on this line;",
        f"{path}:5: column 3 (family_name): a closing quote is followed by more text;",
        f"{path}:6: 3 values for 12 columns in the header; the row is not imported",
        f"{path}:7: 13 values for 12 columns in the header; the row is not imported",
        f"{path}:9: column 1 (mrn): a quoted value is not closed on this line;",
    ]
    assert [line[: len(start)] for line, start in zip(problems, expected, strict=True)] == expected
    assert 'a quote inside a quoted value is written twice ("")' in problems[0]
    assert "(a value holding ',' must be in quotes)" in problems[3]
    words = " ".join(result.stdout.split())
    assert "3 row(s) imported: 3 created" in words and "5 bad row(s) skipped" in words
    for mrn, issuer in (("100234", "GENHOSP"), ("100388", "GENHOSP"), ("E4455", "EPI")):
        assert patient(db_url, mrn, issuer) is not None
    store = open_store(db_url)
    with Session(store) as session:
        names = set(session.scalars(select(Patient.family_name)))
    store.dispose()
    assert names == {"SMITH", "GARCÍA", "NGUYEN"}


def test_event_time_of_sorts_like_hl7_times() -> None:
    from datetime import datetime

    assert event_time_of(datetime(2026, 11, 23, 6, 0)) == "20261123060000.000000"


def test_mpi_screens_at_80_columns_keep_ids_and_dates_whole(db_url: str, tmp_path: Path) -> None:
    path = export(
        tmp_path,
        GOOD[0].replace("SPRINGFIELD", "SPRINGFIELD HEIGHTS NORTH"),
        "E4455667788,EPIC-ENTERPRISE-ID,NGUYEN,LINH,,1999-12-31,F,,,,,",
    )
    assert cli("mpi", "import", str(path), db_url=db_url).returncode == 0

    def narrow(*args: str) -> subprocess.CompletedProcess[str]:
        return run_crosswalk(*args, "--db", db_url, columns=80)

    found = narrow("mpi", "search", "--birth-date", "1999-12-31")
    assert found.returncode == 0, found.stderr
    assert_fits(found.stdout, 80, ["E4455667788^^^EPIC-ENTERPRISE-ID", "1999-12-31", "NGUYEN"])
    shown = narrow("mpi", "show", "100234")
    assert shown.returncode == 0, shown.stderr
    tables = shown.stdout.split("\n", 2)[2]  # below the name and the address (prose)
    assert_fits(tables, 80, ["100234", "GENHOSP", "created"])
