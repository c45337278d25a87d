"""The reconciler: blocking, comparisons, the estimated model, proposals and their life."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, insert, inspect, select, update

from engine.config.loader import load_config
from engine.mpi.importer import MpiImport
from engine.mpi.tables import Order, PatientIdentifier
from engine.reconcile import blocking
from engine.reconcile import estimation as model
from engine.reconcile.comparisons import COLUMNS, COMPARISONS, compare, names_alone
from engine.reconcile.kernel import Pairs, Records
from engine.reconcile.names import identifier_key, name_words, same_person_names
from engine.reconcile.run import _frequency_bonus, reconcile
from engine.reconcile.settings import ReconcilerSettings
from engine.reconcile.tables import PatientKey, Proposal, ProposalStatus, ReconcileRun
from engine.settings import ConfigError
from engine.studies.importer import StudyImport
from tests.support import config_folder, run_crosswalk

MPI_HEADER = "mrn,issuer,family_name,given_name,middle_name,birth_date,sex,street,postal_code\n"
STUDY_HEADER = (
    "study_uid,accession,patient_id,issuer,family_name,given_name,middle_name,birth_date,sex,"
    "study_date,modality,description\n"
)
MPI = [
    "100234,GENHOSP,SMITH,WILLIAM,J,1958-03-14,M,1180 OAK RIDGE DR,62711",
    "100388,GENHOSP,KOWALSKI,TERESA,,1954-11-03,F,2740 CHATHAM RD,62704",
    "100500,GENHOSP,OKAFOR,ANNA,,1990-06-12,F,12 ELM ST,62702",
    "100501,GENHOSP,OKAFOR,ANNE,,1990-06-12,F,12 ELM ST,62702",
    "100600,GENHOSP,NGUYEN,THI LAN,,1971-09-30,F,4 PARK AVE,62701",
    "100700,GENHOSP,BRENNAN,PATRICK,,1949-02-27,M,88 LAKE SHORE DR,62703",
]
SETTINGS = ReconcilerSettings(min_em_pairs=10**9)
"""Small data: no EM (the starting m), so that results do not hang on a handful of pairs."""


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def load(store: Engine, tmp_path: Path, studies: list[str], mpi: list[str] = MPI) -> None:
    MpiImport(store, write(tmp_path / "mpi.csv", MPI_HEADER, mpi)).run()
    StudyImport(store, write(tmp_path / "studies.csv", STUDY_HEADER, studies)).run()


def study(uid: str, pid: str, name: str, born: str, sex: str = "", accession: str = "") -> str:
    family, _, given = name.partition("^")
    return f"{uid},{accession},{pid},OTHERSITE,{family},{given},,{born},{sex},2025-01-02,CT,CT"


def proposals(store: Engine) -> list[tuple[str, str, str, float, int, str]]:
    """(study uid, MRN, band, probability, rank, status) of every proposal."""
    ids = PatientIdentifier.__table__
    p = Proposal.__table__
    query = (
        select(p.c.study_uid, ids.c.value, p.c.band, p.c.probability, p.c.rank, p.c.status)
        .join(ids, ids.c.patient_id == p.c.patient_id)
        .order_by(p.c.study_uid, p.c.rank)
    )
    with store.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]  # type: ignore[misc]


def test_names_and_identifiers_are_prepared_for_comparison() -> None:
    assert name_words("García-López Jr.") == "GARCIA LOPEZ"
    assert "WILLIAM" in same_person_names("BILL")
    assert "BOB" not in same_person_names("BILL")  # both nicknames of ROBERT: not one name
    assert identifier_key("MRN-0012-3456") == identifier_key("123456")


def test_comparison_levels_say_how_two_records_agree() -> None:
    studies = Records(
        family=["SMIHT", "LAN", "", "OKAFOR"],
        given=["BILL", "NGUYEN", "JOHN", "ANNA"],
        middle=["", "", "", ""],
        birth=["19581403", "19710930", "", "19900612"],
        sex=["M", "", "M", "F"],
        postal=["", "", "", ""],
        street=["", "", "", ""],
        phone=["", "", "", ""],
        identifiers=[frozenset({"100243"}), frozenset(), frozenset(), frozenset({"100500"})],
        other_families=[frozenset()] * 4,
        linked=[frozenset(), frozenset(), frozenset(), frozenset({2})],
    )
    patients = Records(
        family=["SMITH", "NGUYEN", "DOE", "OKAFOR"],
        given=["WILLIAM", "LAN", "JOHN", "ANNE"],
        middle=["J", "", "", ""],
        birth=["19580314", "19710930", "19000101", "19900612"],
        sex=["M", "F", "M", "F"],
        postal=["62711", "", "", "62702"],
        street=["", "", "", ""],
        phone=["", "", "", ""],
        identifiers=[frozenset({"100234"}), frozenset({"100600"}), frozenset(), frozenset()],
        other_families=[frozenset()] * 4,
        linked=[frozenset()] * 4,
        keys=[1, 2, 3, 4],
    )
    rows = np.arange(4)
    levels = compare(Pairs(studies, patients, rows, rows))
    named = [
        {c.name: c.levels[levels[i, j]].name for j, c in enumerate(COMPARISONS)} for i in range(4)
    ]
    assert named[0]["family_name"] == "similar"
    assert named[0]["given_name"] == "nickname"
    assert named[0]["birth_date"] == "day_month_swapped"
    assert named[0]["identifier"] == "one_edit"
    assert named[1]["family_name"] == "swapped" and named[1]["given_name"] == "swapped"
    assert named[1]["sex"] == "null"  # missing is not a conflict
    assert named[2]["family_name"] == "null" and named[2]["birth_date"] == "null"
    assert named[3]["given_name"] in ("nickname", "similar")  # ANNA, ANNE
    assert named[3]["accession"] == "order_of_another"


def test_a_pair_resting_on_names_and_birth_date_alone_needs_more_to_be_strong() -> None:
    levels = np.zeros((4, len(COMPARISONS)), dtype=np.int8)
    for name in ("family_name", "given_name", "birth_date"):
        levels[:, COLUMNS[name]] = COMPARISONS[COLUMNS[name]].code_of("exact")
    levels[1, COLUMNS["phone"]] = COMPARISONS[COLUMNS["phone"]].code_of("same")
    levels[2, COLUMNS["middle_name"]] = COMPARISONS[COLUMNS["middle_name"]].code_of("initial")
    identifier = COMPARISONS[COLUMNS["identifier"]]
    levels[3, COLUMNS["identifier"]] = identifier.code_of("different")
    assert names_alone(levels).tolist() == [True, False, True, True]
    settings = ReconcilerSettings()  # strong 0.99, on names alone 0.999
    assert settings.band(0.995) == "strong"  # something else agrees
    assert settings.band(0.995, names_alone="exact") == "possible"
    assert settings.band(0.9995, names_alone="exact") == "strong"
    assert settings.band(0.9995, names_alone="similar") == "strong"
    assert settings.band(0.99999, names_alone="nickname") == "possible"  # LISA for MELISSA
    assert ReconcilerSettings(strong_on_names_alone=0.99).band(0.995, names_alone="exact") == (
        "strong"
    )
    assert ReconcilerSettings(strong_on_names_alone=1.5).check()


def test_orphans_get_the_right_patient_and_twins_are_never_strong(
    store: Engine, tmp_path: Path
) -> None:
    load(
        store,
        tmp_path,
        [
            study("1.1", "X1", "SMYTHE^BILL", "1958-14-03".replace("14-03", "03-14"), "M"),
            study("1.2", "X2", "KOWALSKI^TERESA", "1954-03-11", "F"),  # day and month swapped
            study("1.3", "X3", "OKAFOR^ANNA", "1990-06-12", "F"),  # one of twins
            study("1.4", "X4", "LAN^NGUYEN THI", "1971-09-30", "F"),  # swapped names
            study("1.5", "X5", "SANTOS^MARIA", "1985-01-01", "F"),  # not in the MPI
        ],
    )
    report = reconcile(store, SETTINGS)
    assert report.orphans == 5 and report.scored == 5
    found = {(uid, rank): (mrn, band) for uid, mrn, band, _p, rank, _s in proposals(store)}
    # A nickname, a misspelt family name and a swapped birth date, with nothing else agreeing:
    # namesakes look like that, a reviewer decides.
    assert found[("1.1", 1)] == ("100234", "possible")
    assert found[("1.2", 1)][0] == "100388"
    assert found[("1.4", 1)][0] == "100600"
    assert found[("1.3", 1)][0] == "100500"
    assert all(band != "strong" for (uid, _r), (_m, band) in found.items() if uid == "1.3")
    assert not any(uid == "1.5" for uid, _r in found)


def test_placeholders_are_no_evidence_but_an_order_links_the_study(
    store: Engine, tmp_path: Path
) -> None:
    load(
        store,
        tmp_path,
        [
            study("2.1", "TR123", "DOE^JOHN", "1900-01-01", "M", accession="ACC9"),
            study("2.2", "TR124", "DOE^JOHN", "1900-01-01", "M", accession="ACC10"),
        ],
    )
    with store.begin() as connection:
        owner = connection.execute(
            select(PatientIdentifier.patient_id).where(PatientIdentifier.value == "100700")
        ).scalar_one()
        connection.execute(
            insert(Order.__table__).values(
                patient_id=owner, accession="ACC9", recorded_at=datetime.now(UTC)
            )
        )
    reconcile(store, SETTINGS)
    found = proposals(store)
    assert [(uid, mrn) for uid, mrn, *_ in found] == [("2.1", "100700")]
    with store.connect() as connection:
        evidence = json.loads(connection.execute(select(Proposal.evidence)).scalar_one())
    levels = {item["field"]: item["level"] for item in evidence}
    assert levels["accession"] == "order_of_patient"
    assert levels["family_name"] == "null" and levels["birth_date"] == "null"


def test_runs_are_idempotent_and_remember_decisions(store: Engine, tmp_path: Path) -> None:
    load(
        store,
        tmp_path,
        [
            study("3.1", "X1", "SMITH^WILLIAM", "1958-03-14", "M"),
            study("3.2", "X2", "OKAFOR^ANNE", "1990-06-12", "F"),
        ],
    )
    reconcile(store, SETTINGS)
    first = proposals(store)
    second = reconcile(store, SETTINGS)
    assert proposals(store) == first
    assert second.written.new == 0 and second.written.refreshed == len(first)
    table = Proposal.__table__
    with store.begin() as connection:  # a reviewer rejects 3.2's best candidate
        connection.execute(
            update(table)
            .where(table.c.study_uid == "3.2", table.c.rank == 1)
            .values(status=ProposalStatus.REJECTED)
        )
    reconcile(store, SETTINGS)
    after = proposals(store)
    rejected = [row for row in after if row[0] == "3.2" and row[5] == "rejected"]
    assert len(rejected) == 1
    assert not any(
        row[0] == "3.2" and row[1] == rejected[0][1] and row[5] == "pending" for row in after
    )
    # The study's patient id becomes known to the MPI: it is no longer an orphan.
    MpiImport(
        store,
        write(
            tmp_path / "more.csv",
            "mrn,issuer,family_name,given_name,birth_date\n",
            ["X1,OTHERSITE,SMITH,WILLIAM,1958-03-14"],
        ),
    ).run()
    third = reconcile(store, SETTINGS)
    assert third.written.closed == 1
    statuses = {row[5] for row in proposals(store) if row[0] == "3.1"}
    assert statuses == {"closed"}


def test_changed_study_data_refreshes_pending_proposals(store: Engine, tmp_path: Path) -> None:
    load(store, tmp_path, [study("4.1", "X1", "SMITH^WILLIAM", "1958-03-14", "M")])
    reconcile(store, SETTINGS)
    (before,) = proposals(store)
    StudyImport(
        store,
        write(tmp_path / "s2.csv", STUDY_HEADER, [study("4.1", "X1", "SMITH^W", "1958-03-14", "")]),
    ).run()
    reconcile(store, SETTINGS)
    (after,) = proposals(store)
    assert after[1] == before[1] and after[3] < before[3]


def _synthetic(count: int, seed: int) -> tuple[list[str], list[str], dict[str, str]]:
    """An MPI of ``count`` people and one orphan study of each of a tenth of them, with
    typical errors; the truth maps study uid → MRN."""
    rng = random.Random(seed)
    families = [
        "SMITH",
        "JOHNSON",
        "GARCIA",
        "NGUYEN",
        "OKAFOR",
        "KOWALSKI",
        "BRENNAN",
        "MÜLLER",
        "ROSSI",
        "PATEL",
        "KIM",
        "LOPEZ",
        "WALSH",
        "DUBOIS",
        "SATO",
    ]
    givens = [
        "JAMES",
        "MARY",
        "ROBERT",
        "PATRICIA",
        "WILLIAM",
        "ELIZABETH",
        "LINH",
        "AHMED",
        "SOFIA",
        "LUCA",
        "PRIYA",
        "SEAN",
        "ANNA",
        "MARIA",
        "DAVID",
        "KATHERINE",
    ]
    mpi, studies, truth = [], [], {}
    for n in range(count):
        family, given = rng.choice(families), rng.choice(givens)
        born = f"{rng.randrange(1930, 2015)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        sex = rng.choice("MF")
        mrn = str(500000 + n)
        mpi.append(f"{mrn},GENHOSP,{family},{given},,{born},{sex},{n} MAIN ST,627{n % 100:02d}")
        if n % 10:
            continue
        error = n // 10 % 4
        if error == 1:
            family = family[:2] + family[3:] + family[2]
        elif error == 2:
            given = {"WILLIAM": "BILL", "ROBERT": "BOB", "KATHERINE": "KATE"}.get(given, given)
        elif error == 3:
            born = f"{born[:4]}-{born[8:10]}-{born[5:7]}" if int(born[8:10]) <= 12 else born
        uid = f"9.{n}"
        studies.append(study(uid, f"S{n}", f"{family}^{given}", born, sex))
        truth[uid] = mrn
    return mpi, studies, truth


def test_the_model_is_estimated_from_the_data(store: Engine, tmp_path: Path) -> None:
    mpi, studies, truth = _synthetic(3000, seed=7)
    load(store, tmp_path, studies, mpi)
    settings = ReconcilerSettings(min_em_pairs=100, random_pairs=50_000)
    report = reconcile(store, settings)
    parameters = report.parameters
    assert parameters is not None and parameters.estimated_m
    weights = dict(zip([c.name for c in COMPARISONS], parameters.weights(), strict=True))
    assert weights["birth_date"][1] > 8  # exact birth date: strong evidence
    assert weights["family_name"][-1] < 0  # a different family name counts against
    best = {uid: mrn for uid, mrn, _b, _p, rank, _s in proposals(store) if rank == 1}
    correct = sum(best.get(uid) == mrn for uid, mrn in truth.items())
    assert correct >= 0.95 * len(truth)
    strong = [(uid, mrn) for uid, mrn, band, _p, rank, _s in proposals(store) if band == "strong"]
    assert all(truth[uid] == mrn for uid, mrn in strong)
    with store.connect() as connection:
        keys = connection.execute(select(PatientKey.key)).scalars().all()
    assert len(keys) >= 2 * len(mpi)
    # The keys follow changes to the MPI: a new patient gets keys on the next run.
    MpiImport(
        store,
        write(tmp_path / "new.csv", MPI_HEADER, ["777777,GENHOSP,ZAMORA,INES,,2001-02-03,F,,"]),
    ).run()
    second = reconcile(store, settings)
    if store.dialect.name == "sqlite":
        assert second.keys_refreshed == 1
    with store.connect() as connection:
        keys = connection.execute(select(PatientKey.key)).scalars().all()
    assert "GINE0203" in keys


def test_term_frequency_makes_rare_names_count_more() -> None:
    parameters = model.Parameters(
        0.9, 1000, model.starting_m(), {c.name: c.starting_m for c in COMPARISONS}
    )
    assert parameters.weights()[0][1] == pytest.approx(0.0)
    tf = model.term_frequencies({"SMITH": 990, "ZBYSZKO": 10})
    assert tf["SMITH"] > tf["ZBYSZKO"]


def test_exclusive_probabilities_split_between_lookalikes() -> None:
    rows = np.array([0, 0, 1])
    odds = np.array([20.0, 20.0, 20.0])
    probabilities = model.exclusive_probabilities(rows, odds, 2, 0.9)
    assert probabilities[0] == pytest.approx(0.5, abs=1e-5)
    assert probabilities[2] > 0.9999


def test_not_in_the_mpi_weighs_one_minus_the_match_rate() -> None:
    """Posterior odds 1 (prior π / patients times the Bayes factor) against a study whose
    patient is not in the MPI (prior 1 - π): with π = 0.9 the candidate is ten times likelier."""
    even = np.array([0.0])
    rows = np.array([0])
    assert model.exclusive_probabilities(rows, even, 1, 0.9)[0] == pytest.approx(1 / 1.1)
    assert model.exclusive_probabilities(rows, even, 1, 0.5)[0] == pytest.approx(1 / 1.5)


def test_reconciler_settings_are_checked_with_file_and_line(tmp_path: Path) -> None:
    folder = config_folder(tmp_path, "reconciler:\n  strong: 0.4\n  possible: 0.6\n")
    with pytest.raises(ConfigError) as error:
        load_config(folder)
    assert "possible <= strong" in str(error.value)
    assert "routes.yaml:2" in str(error.value)


def test_cli_runs_shows_parameters_and_exports(db_url: str, store: Engine, tmp_path: Path) -> None:
    load(store, tmp_path, [study("5.1", "X1", "SMITH^BILL", "1958-03-14", "M")])
    result = run_crosswalk("reconcile", "run", "--db", db_url, "--config", "routes")
    assert result.returncode == 0, result.stderr
    assert "1 orphaned studies" in result.stdout and "1 new" in result.stdout
    shown = run_crosswalk("reconcile", "params", "--db", db_url)
    assert shown.returncode == 0 and "birth_date" in shown.stdout
    exported = run_crosswalk("reconcile", "export", "--db", db_url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert rows[0]["study_uid"] == "5.1" and rows[0]["mrn"] == "100234"
    assert rows[0]["patient_id"] == "X1" and rows[0]["issuer"] == "OTHERSITE"
    assert {"proposal_id", "probability", "band", "rank", "status"} <= set(rows[0])
    as_json = run_crosswalk("reconcile", "export", "--db", db_url, "--format", "json")
    assert json.loads(as_json.stdout)[0]["evidence"][0]["field"] == "prior"
    bad = run_crosswalk("reconcile", "run", "--db", db_url, "--since", "2025-13-01")
    assert bad.returncode == 2 and "not a date" in bad.stderr


def test_blocking_without_a_birth_date_and_identifiers_found_by_value(
    store: Engine, tmp_path: Path
) -> None:
    load(
        store,
        tmp_path,
        [
            study("6.1", "X1", "BRENNAN^PATRICK", ""),  # no birth date: family + given prefix
            study("6.2", "MRN-0100388", "KOVALSKI^T", "1960-01-01", "F"),  # only the id agrees
        ],
    )
    report = reconcile(store, SETTINGS)
    best = {uid: mrn for uid, mrn, _b, _p, rank, _s in proposals(store) if rank == 1}
    assert best == {"6.1": "100700", "6.2": "100388"}
    with store.connect() as connection:
        keys = set(connection.execute(select(PatientKey.key)).scalars())
    assert "NBRNNPAT" in keys
    # MPI identifiers stored as their key are looked up by value: no key of their own.
    assert not any(key.startswith("I") for key in keys)
    assert report.keys_refreshed == len(MPI)


def test_keys_of_an_older_version_are_rebuilt(store: Engine, tmp_path: Path) -> None:
    load(store, tmp_path, [study("7.1", "X1", "SMITH^WILLIAM", "1958-03-14", "M")])
    reconcile(store, SETTINGS)
    if store.dialect.name == "sqlite":  # PostgreSQL looks at recent changes again
        assert reconcile(store, SETTINGS).keys_refreshed == 0
    runs = ReconcileRun.__table__
    with store.begin() as connection:
        for run_id, text in connection.execute(select(runs.c.id, runs.c.parameters)).all():
            old = json.loads(text)
            old["keys_version"] = 1
            connection.execute(
                update(runs).where(runs.c.id == run_id).values(parameters=json.dumps(old))
            )
    assert reconcile(store, SETTINGS).keys_refreshed == len(MPI)


def test_a_common_name_counts_less_than_a_rare_one() -> None:
    """However much a rare level (swapped names) weighs, an exact common name is not lifted
    to it: only the near spellings (similar, phonetic) are its floor."""
    names = ["SMITH", "ZBYSZKO"]
    records = Records(
        family=names,
        given=["ANNA", "ANNA"],
        middle=["", ""],
        birth=["", ""],
        sex=["", ""],
        postal=["", ""],
        street=["", ""],
        phone=["", ""],
        identifiers=[frozenset()] * 2,
        other_families=[frozenset()] * 2,
        linked=[frozenset()] * 2,
        keys=[1, 2],
    )
    pairs = Pairs(records, records, np.arange(2), np.arange(2))
    levels = compare(pairs)
    u = model.estimate_u(np.zeros((0, len(COMPARISONS)), dtype=np.int8))
    u["family_name"][COMPARISONS[0].code_of("swapped")] = 1e-7
    parameters = model.Parameters(0.9, 1000, model.starting_m(), u)
    frequencies = {"family": {"SMITH": 0.05, "ZBYSZKO": 1e-6}, "given": {"ANNA": 0.01}}
    bonus = _frequency_bonus(levels, pairs, parameters, frequencies)["family_name"]
    assert bonus[0] < 0 < bonus[1]


def test_keys_made_in_a_second_process_are_the_same(
    store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(store, tmp_path, [study("8.1", "X1", "SMITH^WILLIAM", "1958-03-14", "M")])
    reconcile(store, SETTINGS, rebuild_keys=True)
    with store.connect() as connection:
        here = sorted(connection.execute(select(PatientKey.key, PatientKey.patient_id)).all())
    monkeypatch.setattr(blocking, "PARALLEL_KEYS", 1)
    monkeypatch.setattr(blocking, "REFRESH_CHUNK", 1)  # a chunk a patient: both processes
    assert reconcile(store, SETTINGS, rebuild_keys=True).keys_refreshed == len(MPI)
    with store.connect() as connection:
        there = sorted(connection.execute(select(PatientKey.key, PatientKey.patient_id)).all())
    assert there == here and len(here) >= 3 * len(MPI)


def _records(family: list[str], given: list[str]) -> Records:
    size = len(family)
    return Records(
        family=family,
        given=given,
        middle=[""] * size,
        birth=[""] * size,
        sex=[""] * size,
        postal=[""] * size,
        street=[""] * size,
        phone=[""] * size,
        identifiers=[frozenset()] * size,
        other_families=[frozenset()] * size,
        linked=[frozenset()] * size,
        keys=list(range(1, size + 1)),
    )


def test_the_patients_keys_made_in_one_loop_are_each_records_keys() -> None:
    patients = _records(
        ["SMITH", "", "O BRIEN", "NGUYEN", "LI", "GARCIA LOPEZ"],
        ["JOHN", "MARY", "", "J", "AN", "WILLIAM"],
    )
    patients.birth = ["19450312", "19900101", "19781224", "", "2001", "19660707"]
    patients.street = ["12A ELM ST", "", "7 HIGH RD", "0040 MAIN", "", "ONE WAY"]
    patients.postal = ["02134", "", "", "99501", "10001", "10002"]
    patients.phone = ["5551234", "", "5559876", "", "", ""]
    patients.other_families = [
        frozenset({"SMYTH", "JONES"}),
        frozenset({"KELLY"}),
        frozenset(),
        frozenset({""}),
        frozenset(),
        frozenset({"LOPEZ"}),
    ]
    patients.keyed_identifiers = [frozenset({"12345"}), *[frozenset()] * 4, frozenset({"9", "8"})]
    keys, owners = blocking.patient_keys(patients)
    expected = {
        (key, patient_id)
        for row, patient_id in enumerate(patients.keys)
        for key in blocking.record_keys(patients, row)
    }
    assert len(keys) == len(expected) and set(zip(keys, owners, strict=True)) == expected
    assert {key[0] for key in keys} == set("INFYGPH")


def test_a_slip_of_the_first_letter_is_a_similar_name_and_swapped_names_count_once() -> None:
    studies = _records(["ULIBARI", "LEE", "ANNA"], ["KAMES", "JON", "OKAFOR"])
    patients = _records(["ULIBARRI", "LEO", "OKAFOR"], ["JAMES", "JOHN", "ANNA"])
    pairs = Pairs(studies, patients, np.arange(3), np.arange(3))
    levels = compare(pairs)
    family, given = COMPARISONS[0], COMPARISONS[1]
    assert given.levels[levels[0, 1]].name == "similar"  # KAMES ~ JAMES: Jaro-Winkler 0.87
    assert family.levels[levels[1, 0]].name != "similar"  # LEE, LEO: too short for a slip
    assert family.levels[levels[2, 0]].name == given.levels[levels[2, 1]].name == "swapped"
    u = model.estimate_u(np.zeros((0, len(COMPARISONS)), dtype=np.int8))
    parameters = model.Parameters(0.9, 1000, model.starting_m(), u)
    frequencies = {"family": {"OKAFOR": 1e-4}, "given": {"ANNA": 1e-2}}
    weights = model.match_weights(
        levels, parameters, _frequency_bonus(levels, pairs, parameters, frequencies)
    )
    right = Pairs(_records(["OKAFOR"], ["ANNA"]), patients, np.array([0]), np.array([2]))
    right_levels = compare(right)
    assert (
        family.levels[right_levels[0, 0]].name == given.levels[right_levels[0, 1]].name == "exact"
    )
    exact = model.match_weights(
        right_levels,
        parameters,
        _frequency_bonus(right_levels, right, parameters, frequencies),
    )
    assert weights[2, :2].sum() == pytest.approx(exact[0, :2].sum())
    # Swapped and misspelt (DAVIS^ANDREW for ANDRE^DAVID): near spellings, not two rare names.
    near = Pairs(
        _records(["DAVIS"], ["ANDREW"]),
        _records(["ANDRE"], ["DAVID"]),
        np.zeros(1, int),
        np.zeros(1, int),
    )
    near_levels = compare(near)
    assert family.levels[near_levels[0, 0]].name == "swapped"
    rare = {"family": {"ANDRE": 1e-6}, "given": {"DAVIS": 1e-6}}
    near_weights = model.match_weights(
        near_levels, parameters, _frequency_bonus(near_levels, near, parameters, rare)
    )
    spelt = [
        max(parameters.weights()[column][c.code_of(level)] for level in c.spellings)
        for column, c in enumerate((family, given))
    ]
    assert near_weights[0, :2].tolist() == pytest.approx(spelt)


IMPLAUSIBLE_MPI = [
    *MPI,
    "200001,GENHOSP,HALVORSEN,INGRID,,1940-04-27,F,,",
    "200002,GENHOSP,PETROVIC,MILAN,,1945-10-22,M,,",
    "200003,GENHOSP,ABERNATHY,CLARA,,1945-04-03,F,,",
    "200004,GENHOSP,FITZGERALD,OWEN,,1995-10-22,M,,",
    "200005,GENHOSP,PETROVIC,MILAN,,1975-03-02,M,,",  # a namesake
    "200006,GENHOSP,HALVORSEN,INGRID,,1962-11-05,F,,",  # another namesake
]


def test_an_implausible_birth_date_is_compared_digit_by_digit(
    store: Engine, tmp_path: Path
) -> None:
    load(
        store,
        tmp_path,
        [
            study("10.1", "X1", "HALVORSEN^INGRID", "19402704", "F"),  # day and month swapped
            study("10.2", "X2", "PETROVIC^MILAN", "20451022", "M"),  # century slip
            study("10.3", "X3", "ABERNATHY^CLARA", "1945-04-93", "F"),  # one digit
            study("10.4", "X4", "FITZGERALD^OWEN", "20951022", "M"),  # century slip
            # Only the year taken back a century finds him (given name an initial).
            study("10.5", "X5", "PETROVIC^M", "20451022", "M"),
        ],
        IMPLAUSIBLE_MPI,
    )
    report = reconcile(store, SETTINGS)
    assert (report.scored, report.flagged) == (5, 5)
    best = {uid: mrn for uid, mrn, _b, _p, rank, _s in proposals(store) if rank == 1}
    assert best == {
        "10.1": "200001",
        "10.2": "200002",
        "10.3": "200003",
        "10.4": "200004",
        "10.5": "200002",
    }
    levels = {}
    with store.connect() as connection:
        for uid, evidence in connection.execute(
            select(Proposal.study_uid, Proposal.evidence).where(Proposal.rank == 1)
        ):
            levels[uid] = {e["field"]: e["level"] for e in json.loads(evidence)}["birth_date"]
    assert levels == {
        "10.1": "day_month_swapped",
        "10.2": "one_digit",
        "10.3": "one_digit",
        "10.4": "one_digit",
        "10.5": "one_digit",
    }


def test_impossible_dates_are_never_exact_unless_every_digit_is() -> None:
    size = 6
    studies = _records([""] * size, [""] * size)
    patients = _records([""] * size, [""] * size)
    studies.birth = ["19402704", "20451022", "19450493", "19450493", "20951022", "19402704"]
    patients.birth = ["19400427", "19451022", "19450403", "19450493", "19950101", "19410101"]
    levels = compare(Pairs(studies, patients, np.arange(size), np.arange(size)))
    birth = [c.name for c in COMPARISONS].index("birth_date")
    named = [COMPARISONS[birth].levels[level].name for level in levels[:, birth]]
    assert named == [
        "day_month_swapped",
        "one_digit",  # the century 19/20 slipped
        "one_digit",
        "exact",  # the same digits, whatever they are
        "different",
        "different",
    ]


def test_a_study_born_in_the_future_is_also_blocked_a_century_earlier() -> None:
    studies = _records(["PETROVIC"], ["M"])
    studies.birth = ["20451022"]
    family = blocking.family_key("PETROVIC")
    keys = blocking.record_keys(studies, 0, study=True)
    assert {f"F{family}2045", f"F{family}1945"} <= keys
    studies.birth = ["19450493"]  # impossible, but its year is a key as it is
    keys = blocking.record_keys(studies, 0, study=True)
    assert f"F{family}1945" in keys and f"F{family}2045" not in keys


ADDRESS_MPI_HEADER = (
    "mrn,issuer,family_name,given_name,middle_name,birth_date,sex,street,postal_code,phone\n"
)
ADDRESS_STUDY_HEADER = (
    "study_uid,accession,patient_id,issuer,family_name,given_name,middle_name,birth_date,sex,"
    "study_date,modality,description,street,postal_code,phone\n"
)


def _found_by(store: Engine) -> dict[str, dict[str, set[str]]]:
    """Per orphaned study, per source of candidates, the MRNs it finds (keys refreshed)."""
    from engine.reconcile.records import load_studies
    from engine.studies.orphans import Orphan, classify

    blocking.refresh_keys(store, None)
    orphans = [o for o in classify(store, settings=SETTINGS) if isinstance(o, Orphan)]
    with store.connect() as connection:
        studies = load_studies(connection, [o.study for o in orphans], SETTINGS)
        found = blocking.candidate_sources(connection, studies, SETTINGS.max_block_size, {})
        query = select(PatientIdentifier.patient_id, PatientIdentifier.value)
        mrns = {patient: value for patient, value in connection.execute(query)}
    out: dict[str, dict[str, set[str]]] = {o.study.study_uid: {} for o in orphans}
    for source, (rows, patients) in found.items():
        for row, patient in zip(rows, patients, strict=True):
            out[orphans[row].study.study_uid].setdefault(source, set()).add(mrns[patient])
    return out


def test_blocking_finds_patients_when_birth_date_and_family_name_both_fail(
    store: Engine, tmp_path: Path
) -> None:
    """Given name + birth year and month (a married name and a day mistyped), family names one
    slip away (no birth date), and the recorded address or phone (a married name and no birth
    date) each still find the patient; a study's nickname stands for the formal name."""
    mpi = [
        "100388,GENHOSP,KOWALSKI,TERESA,,1954-11-03,F,2740 CHATHAM RD,62704,(217)555-0199",
        "100500,GENHOSP,OKAFOR,ANNA,,1990-06-12,F,12 ELM ST,62702,",
        "100700,GENHOSP,BRENNAN,PATRICK,,1949-02-27,M,88 LAKE SHORE DR,62703,",
        "100800,GENHOSP,SMITH,WILLIAM,,1958-03-14,M,,,",
    ]
    studies = [
        # married, the day mistyped: only given name + year + month is left
        "7.1,,X1,OTHER,NOWAK,TERESA,,1954-11-08,F,2025-01-02,CT,CT,,,",
        # a slip in the family name that changes its sound, no birth date
        "7.2,,X2,OTHER,BTENNAN,PATRICK,,,M,2025-01-02,CT,CT,,,",
        # married, no birth date, the street name misspelt: house number + postal code
        "7.3,,X3,OTHER,ADEYEMI,ANNA,,,F,2025-01-02,CT,CT,12 ELN ST,62702,",
        # married, no birth date, moved: the phone
        "7.4,,X4,OTHER,NOWAK,TERESA,,,F,2025-01-02,CT,CT,9 OAK AVE,62799,217 555 0199",
        # a nickname, married, the day mistyped
        "7.5,,X5,OTHER,JONES,BILL,,1958-03-15,M,2025-01-02,CT,CT,,,",
        # only an initial for the given name, the year mistyped: the family name's keys of
        # every given name with that initial
        "7.6,,X6,OTHER,SMITH,W,,1968-03-14,M,2025-01-02,CT,CT,,,",
    ]
    MpiImport(store, write(tmp_path / "mpi.csv", ADDRESS_MPI_HEADER, mpi)).run()
    StudyImport(store, write(tmp_path / "studies.csv", ADDRESS_STUDY_HEADER, studies)).run()
    found = _found_by(store)
    assert "100388" in found["7.1"]["Y"]
    assert "100700" in found["7.2"]["N"]
    assert "100500" in found["7.3"]["H"]
    assert found["7.4"]["P"] == {"100388"}
    assert "100800" in found["7.5"]["Y"]
    assert found["7.6"] == {blocking.INITIAL_SOURCE: {"100800"}}
    # none of them is found by the keys that were there before
    for uid in ("7.1", "7.3", "7.4", "7.5", "7.6"):
        assert not set(found[uid]) & {"F", "G", "birth date"}, uid
    # every key made anew (appended by patient, then indexed in one go): the key index is back
    with store.connect() as connection:
        indexes = inspect(connection).get_indexes("patient_keys")
    assert [index["column_names"] for index in indexes] == [["key", "patient_id"]]


def test_a_family_name_and_initial_range_too_large_is_narrowed_not_dropped(
    store: Engine, tmp_path: Path
) -> None:
    """SMITH^J in a large MPI holds more patients than a range may pair: each study keeps the
    range's patients born on its birth date or one slip from it (without a birth date, those
    with its middle initial) instead of losing the range, and the patient in it."""
    mpi = [
        "100800,GENHOSP,SMITH,JAMES,KEITH,1958-03-14,M,,,",
        "100801,GENHOSP,SMITH,JOHN,PAUL,1971-06-02,M,,,",
        "100802,GENHOSP,SMITH,JOSEPH,,1980-11-23,M,,,",
        "100803,GENHOSP,SMITH,JEROME,ALAN,1944-01-09,M,,,",
        "100804,GENHOSP,SMITH,JULIAN,,1999-12-30,M,,,",
    ]
    studies = [
        "8.1,,X1,OTHER,SMITH,J,,1968-03-14,M,2025-01-02,CT,CT,,,",  # the year mistyped
        "8.2,,X2,OTHER,SMITH,J,,1958-14-03,M,2025-01-02,CT,CT,,,",  # day and month swapped
        "8.3,,X3,OTHER,SMITH,J,K,,M,2025-01-02,CT,CT,,,",  # no birth date: the middle initial
        "8.4,,X4,OTHER,SMITH,J,,,M,2025-01-02,CT,CT,,,",  # neither: the range says too little
        "8.5,,X5,OTHER,SMITH,J,,2001-07-07,M,2025-01-02,CT,CT,,,",  # nobody born near it
    ]
    MpiImport(store, write(tmp_path / "mpi.csv", ADDRESS_MPI_HEADER, mpi)).run()
    StudyImport(store, write(tmp_path / "studies.csv", ADDRESS_STUDY_HEADER, studies)).run()
    blocking.refresh_keys(store, None)
    from engine.reconcile.records import load_studies
    from engine.studies.orphans import Orphan, classify

    orphans = [o for o in classify(store, settings=SETTINGS) if isinstance(o, Orphan)]
    uids = [o.study.study_uid for o in orphans]
    found: dict[int, dict[str, set[str]]] = {}
    with store.connect() as connection:
        studies_read = load_studies(connection, [o.study for o in orphans], SETTINGS)
        query = select(PatientIdentifier.patient_id, PatientIdentifier.value)
        mrns = {patient: value for patient, value in connection.execute(query)}
        # five patients in SMITH^J: a range may hold 20 // 10 = 2 of them
        for size in (20, 50):
            sources = blocking.candidate_sources(connection, studies_read, size, {})
            rows, patients = sources.get(blocking.INITIAL_SOURCE, ([], []))
            by_uid: dict[str, set[str]] = {uid: set() for uid in uids}
            for row, patient in zip(rows, patients, strict=True):
                by_uid[uids[row]].add(mrns[patient])
            found[size] = by_uid
    assert found[20] == {
        "8.1": {"100800"},
        "8.2": {"100800"},
        "8.3": {"100800"},
        "8.4": set(),
        "8.5": set(),
    }
    every = {"100800", "100801", "100802", "100803", "100804"}
    assert found[50] == {uid: every for uid in ("8.1", "8.2", "8.3", "8.4", "8.5")}


def test_a_second_look_finds_what_no_key_found_for_the_studies_left_unresolved(
    store: Engine, tmp_path: Path
) -> None:
    """Studies for which the first keys find no candidate worth proposing are looked at again
    with the names one slip from theirs (a letter added too): a family name whose sound a
    dropped letter changed with a month mistyped, a slip in a given name's first letters
    without a birth date, an initial with a misspelt family name and a year slipped."""
    mpi = [
        "100900,GENHOSP,HARTMAN,NICOLE,,1936-10-05,F,,,",
        "100901,GENHOSP,HARTMAN,NICOLE,,1962-01-17,F,,,",  # a namesake born far from it
        "100902,GENHOSP,BRADLEY,SANDRA,K,1948-12-02,F,,,",
        "100903,GENHOSP,ULLRICH,MICHAEL,,1995-09-28,M,,,",
        "100904,GENHOSP,OKAFOR,ANNA,,1990-06-12,F,,,",
    ]
    studies = [
        "9.1,,X1,OTHER,HARTAN,NICOLE,,1936-11-05,F,2025-01-02,CT,CT,,,",
        "9.2,,X2,OTHER,BRADLEY,ASNDRA,K,,F,2025-01-02,CT,CT,,,",
        "9.3,,X3,OTHER,ULLRICJ,M,,1994-09-28,M,2025-01-02,CT,CT,,,",
        "9.4,,X4,OTHER,OKAFOR,ANNA,,1990-06-12,F,2025-01-02,CT,CT,,,",  # found at once
    ]
    MpiImport(store, write(tmp_path / "mpi.csv", ADDRESS_MPI_HEADER, mpi)).run()
    StudyImport(store, write(tmp_path / "studies.csv", ADDRESS_STUDY_HEADER, studies)).run()
    found = _found_by(store)
    assert found["9.4"]["birth date"] == {"100904"}
    for uid in ("9.1", "9.2", "9.3"):  # no first key finds them
        assert not any(mrns & {"100900", "100902", "100903"} for mrns in found[uid].values())
    report = reconcile(store, SETTINGS)
    best = {uid: mrn for uid, mrn, _band, _p, rank, _s in proposals(store) if rank == 1}
    assert best == {"9.1": "100900", "9.2": "100902", "9.3": "100903", "9.4": "100904"}
    assert "100901" not in {mrn for _uid, mrn, *_ in proposals(store)}
    assert report.pairs == _first_pairs(store) + 3  # the second look's pairs are counted


def _first_pairs(store: Engine) -> int:
    """How many distinct pairs the first keys find."""
    from engine.reconcile.records import load_studies
    from engine.studies.orphans import Orphan, classify

    orphans = [o for o in classify(store, settings=SETTINGS) if isinstance(o, Orphan)]
    with store.connect() as connection:
        studies = load_studies(connection, [o.study for o in orphans], SETTINGS)
        return len(blocking.candidates(connection, studies, SETTINGS.max_block_size, {})[0])


def test_a_birth_date_near_another_is_one_slip_from_it() -> None:
    assert blocking.near_birth("19680314", "19580314")  # a digit
    assert blocking.near_birth("19581403", "19580314")  # day and month swapped
    assert blocking.near_birth("20580314", "19580314")  # the century
    assert blocking.near_birth("19583014", "19580314")  # two digits transposed
    assert not blocking.near_birth("19680315", "19580314")  # two digits
    assert not blocking.near_birth("", "19580314")
    assert not blocking.near_birth("1958", "1958")


def test_one_slip_variants_and_house_numbers() -> None:
    assert {"SMTH", "SMIHT", "SNITH", "SMITH"} <= blocking.one_slip("SMITH")
    assert "SMITHS" not in blocking.one_slip("SMITH")  # a letter added is not looked for
    assert {"SMITHS", "SMIITH", "ASMITH"} <= blocking.one_slip("SMITH", added=True)
    assert blocking.house_number("12A ELM ST") == "12"
    assert blocking.house_number("ELM ST") == ""
    studies = _records(["BRENNAN"], ["PATRICK"])
    studies.birth = ["19490227"]
    slipped = f"N{blocking.family_key('BTENNAN')}PAT"
    assert slipped not in blocking.record_keys(studies, 0, study=True)
    studies.birth = [""]  # no birth date: the names one slip away are asked for too
    assert slipped in blocking.record_keys(studies, 0, study=True)


def test_em_never_learns_a_disagreement_away_when_no_match_in_the_training_set_shows_it() -> None:
    """Training pairs whose true matches all agree on address and phone (nobody moved): EM
    keeps "different" at no less than a tenth of its starting m, so a patient who did move is
    not ruled out by one field."""
    names = [c.name for c in COMPARISONS]
    agree = [1] * len(COMPARISONS)
    differ = [len(c.levels) - 1 for c in COMPARISONS]
    levels = np.array([agree] * 2_000 + [differ] * 8_000, dtype=np.int8)
    start = model.starting_m()
    u = {c.name: [0.0] + [0.001] * (len(c.levels) - 2) + [1.0] for c in COMPARISONS}
    u = {name: model._normalised(np.array(values)) for name, values in u.items()}
    m, _, _ = model.estimate_m([(levels, ())], u, start, iterations=50)
    for name in ("address", "phone"):
        index = names.index(name)
        learnt, started = m[name][-1], start[name][-1]
        assert learnt >= 0.1 * started * 0.9, (name, learnt, started)  # floored, renormalised
        weight = np.log2(learnt / u[name][-1])
        assert weight > -8, (name, weight)
        assert levels[:2_000, index].max() == 1  # no true match disagreed on it


def test_damaged_or_missing_output_of_a_key_process_is_a_clear_error() -> None:
    """What a key process writes is read back as its key rows, or refused with an error that
    says so: output cut short, or damaged on the way (bytes changed: a pickled text no longer
    UTF-8, which pickle reports as a UnicodeDecodeError), or not key rows at all."""
    import pickle

    rows = (["K1", "K2"], [1, 2])
    assert blocking.read_key_rows(io.BytesIO(pickle.dumps(rows))) == rows
    whole = pickle.dumps((["SMITH"], [7]), pickle.HIGHEST_PROTOCOL)
    damaged = whole.replace(b"SMITH", b"SM\xffTH")
    for output, says in (
        (b"", "ended early"),
        (whole[:-3], "could not be read (UnpicklingError)"),
        (damaged, "could not be read (UnicodeDecodeError)"),
        (pickle.dumps({"not": "rows"}), "not key rows"),
        (pickle.dumps((["K1"], [1, 2])), "not key rows"),
    ):
        with pytest.raises(blocking.KeyProcessFailed, match=re.escape(says)):
            blocking.read_key_rows(io.BytesIO(output))
