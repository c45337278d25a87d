"""Comparison levels, case by case: per comparison a table of (study, patient, expected level),
as Splink tests its comparison levels; and the shape of a comparison (one ordered list of
levels) and of the parameters stored from it."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from engine.reconcile import estimation
from engine.reconcile.comparisons import (
    ACCESSION,
    ADDRESS,
    BIRTH_DATE,
    COMPARISONS,
    FAMILY_NAME,
    GIVEN_NAME,
    IDENTIFIER,
    MIDDLE_NAME,
    PHONE,
    SEX,
    Comparison,
    Level,
    compare,
)
from engine.reconcile.kernel import Pairs, Records, first_level

Value = str | set[str] | set[int] | dict[str, Any]
"""One side of a case: the value of the comparison's field, or several fields by name."""
Case = tuple[Value, Value, str]
"""(study, patient, expected level); every field not given is empty."""

FIELD = {
    "family_name": "family",
    "given_name": "given",
    "middle_name": "middle",
    "birth_date": "birth",
    "sex": "sex",
    "identifier": "identifiers",
    "phone": "phone",
}
"""The field a plain value of a case is, per comparison (the others give fields by name)."""
SETS = {"identifiers", "other_families", "linked", "keyed_identifiers"}

FAMILY_NAME_CASES: list[Case] = [
    ("SMITH", "SMITH", "exact"),
    ("", "SMITH", "null"),
    ("SMITH", "", "null"),
    ("JONES", {"family": "SMITH", "other_families": {"JONES"}}, "other_name"),
    ("SMIHT", "SMITH", "similar"),  # Jaro-Winkler ≥ 0.92
    ("ULIBARI", "ULIBARRI", "similar"),
    ("CROWN", "BROWN", "similar"),  # the first letter wrong: one edit, 4+ letters
    ("LEE", "LEO", "phonetic"),  # too short for a slip
    ("HERNANDEZ LOPEZ", "LOPEZ", "one_part"),
    ("GARCIA", "GARCIA LOPEZ", "one_part"),
    ({"family": "LAN", "given": "NGUYEN"}, {"family": "NGUYEN", "given": "LAN"}, "swapped"),
    ("PHILLIPS", "FILIPS", "phonetic"),
    ("SMITH", "JONES", "different"),
]

GIVEN_NAME_CASES: list[Case] = [
    ("JOHN", "JOHN", "exact"),
    ("", "JOHN", "null"),
    ("BILL", "WILLIAM", "nickname"),
    ("KAMES", "JAMES", "similar"),
    ("MARGARETE", "MARGARET", "similar"),
    ("J", "JOHN", "initial"),
    ("JOHN", "J", "initial"),
    ("J", "MARY", "different"),
    ({"given": "JAMES"}, {"given": "ROBERT", "middle": "JAMES"}, "middle_swapped"),
    ({"given": "ROBERT", "middle": "JAMES"}, {"given": "JAMES"}, "middle_swapped"),
    ({"family": "LAN", "given": "NGUYEN"}, {"family": "NGUYEN", "given": "LAN"}, "swapped"),
    ("STEPHEN", "STEVEN", "phonetic"),
    ("CATHERINE", "KATHRYN", "phonetic"),
    ("JOHN", "MARY", "different"),
]

MIDDLE_NAME_CASES: list[Case] = [
    ("CATHERINE", "CATHERINE", "exact"),
    ("C", "CATHERINE", "initial"),  # PACS often keep only the initial
    ("CATHERINE", "C", "initial"),
    ("C", "C", "initial"),
    ("CATHERIN", "CATHERINE", "similar"),
    ("C", "ANNE", "different"),
    ("CATHERINE", "ANNE", "different"),
    ("", "ANNE", "null"),
    ("ANNE", "", "null"),
    # the given name is the other's middle name: the given name's level says so, once
    ({"given": "JAMES", "middle": "R"}, {"given": "ROBERT", "middle": "JAMES"}, "null"),
]

BIRTH_DATE_CASES: list[Case] = [
    ("19580314", "19580314", "exact"),
    ("", "19580314", "null"),
    ("19580314", "", "null"),
    ("19581403", "19580314", "day_month_swapped"),
    ("19402704", "19400427", "day_month_swapped"),  # no 27th month: compared as digits
    ("19580315", "19580314", "one_digit"),
    ("19580341", "19580314", "one_digit"),  # two digits transposed
    ("19450493", "19450403", "one_digit"),  # no 93rd day
    ("20451022", "19451022", "one_digit"),  # the century slipped
    ("19580101", "19581231", "same_year"),
    ("19600101", "19581231", "different"),
    ("19450493", "19450493", "exact"),  # the same digits, whatever they are
    ("20951022", "19950101", "different"),
]

SEX_CASES: list[Case] = [
    ("M", "M", "same"),
    ("F", "M", "different"),
    ("", "F", "null"),
    ("M", "", "null"),
]

IDENTIFIER_CASES: list[Case] = [
    ("100234", {"100234"}, "same_value"),
    ("200002", {"100234", "200002"}, "same_value"),  # under any issuer
    ("100243", {"100234"}, "one_edit"),
    ("200001", {"100234", "200002"}, "one_edit"),
    ("1234", {"1235"}, "different"),  # too short for a slip
    ("100234", {"999999"}, "different"),
    ("", {"100234"}, "null"),
    ("100234", set(), "null"),
]

ADDRESS_CASES: list[Case] = [
    (
        {"street": "12 ELM ST", "postal": "62702"},
        {"street": "12 ELM ST", "postal": "62702"},
        "same",
    ),
    ({"street": "12 ELM ST"}, {"street": "12 ELM ST", "postal": "62702"}, "same"),
    ({"street": "12 ELM STREET"}, {"street": "12 ELM ST"}, "same"),
    (
        {"street": "12 ELM ST", "postal": "62702"},
        {"street": "12 ELM ST", "postal": "62711"},
        "different",
    ),
    ({"postal": "62702"}, {"street": "4 PARK AVE", "postal": "62702"}, "same_postal_code"),
    (
        {"street": "9 MAIN ST", "postal": "62702"},
        {"street": "4 PARK AVE", "postal": "62702"},
        "same_postal_code",
    ),
    ({"street": "9 MAIN ST"}, {"street": "4 PARK AVE"}, "different"),
    (  # a postal code's digit slipped, the street the same
        {"street": "12 ELM ST", "postal": "62720"},
        {"street": "12 ELM ST", "postal": "62702"},
        "same",
    ),
    (
        {"street": "12 ELN ST", "postal": "62702"},
        {"street": "12 ELM ST", "postal": "62702"},
        "same",
    ),
    (  # two postal digits off: another place
        {"street": "12 ELM ST", "postal": "62799"},
        {"street": "12 ELM ST", "postal": "62702"},
        "different",
    ),
    ({}, {"street": "12 ELM ST", "postal": "62702"}, "null"),
    ({"street": "12 ELM ST", "postal": "62702"}, {}, "null"),
]

PHONE_CASES: list[Case] = [
    ("5550123", "5550123", "same"),
    ("5550123", "5550124", "same"),  # one digit slipped
    ("5550123", "5550213", "same"),  # two swapped
    ("5550123", "5559923", "different"),
    ("", "5550123", "null"),
    ("5550123", "", "null"),
]

ACCESSION_CASES: list[Case] = [
    ({"linked": {7}}, {"keys": 7}, "order_of_patient"),
    ({"linked": {7, 8}}, {"keys": 8}, "order_of_patient"),
    ({"linked": {8}}, {"keys": 7}, "order_of_another"),
    ({}, {"keys": 7}, "null"),
]

TABLES: list[tuple[Comparison, list[Case]]] = [
    (FAMILY_NAME, FAMILY_NAME_CASES),
    (GIVEN_NAME, GIVEN_NAME_CASES),
    (MIDDLE_NAME, MIDDLE_NAME_CASES),
    (BIRTH_DATE, BIRTH_DATE_CASES),
    (SEX, SEX_CASES),
    (IDENTIFIER, IDENTIFIER_CASES),
    (ADDRESS, ADDRESS_CASES),
    (PHONE, PHONE_CASES),
    (ACCESSION, ACCESSION_CASES),
]


def _fields(comparison: Comparison, value: Value) -> dict[str, Any]:
    found: dict[str, Any] = (
        dict(value) if isinstance(value, dict) else {FIELD[comparison.name]: value}
    )
    for name in SETS & set(found):
        given = found[name]
        found[name] = frozenset([given] if isinstance(given, str) and given else given or ())
    return found


def _records(rows: list[dict[str, Any]]) -> Records:
    """Records with one row per dict; a field a row does not give is empty."""
    columns: dict[str, list[Any]] = {}
    for field in fields(Records):
        empty: Any = frozenset() if field.name in SETS else 0 if field.name == "keys" else ""
        columns[field.name] = [row.get(field.name, empty) for row in rows]
    return Records(**columns)


def _levels(comparison: Comparison, cases: list[Case]) -> list[str]:
    """The level of each case, all cases compared as one set of pairs."""
    studies = _records([_fields(comparison, study) for study, _, _ in cases])
    patients = _records([_fields(comparison, patient) for _, patient, _ in cases])
    rows = np.arange(len(cases))
    codes = comparison.compare(Pairs(studies, patients, rows, rows))
    return [comparison.levels[code].name for code in codes]


@pytest.mark.parametrize(
    ("comparison", "study", "patient", "expected"),
    [
        pytest.param(comparison, study, patient, expected, id=f"{comparison.name}-{expected}-{n}")
        for comparison, cases in TABLES
        for n, (study, patient, expected) in enumerate(cases)
    ],
)
def test_a_pair_is_sorted_into_its_level(
    comparison: Comparison, study: Value, patient: Value, expected: str
) -> None:
    assert _levels(comparison, [(study, patient, expected)]) == [expected]


@pytest.mark.parametrize(("comparison", "cases"), TABLES, ids=[c.name for c, _ in TABLES])
def test_a_table_compared_at_once_gives_each_case_its_level(
    comparison: Comparison, cases: list[Case]
) -> None:
    """Column-wise, a level is only asked about the pairs no earlier level took: the cases
    side by side get the levels they get one by one."""
    assert _levels(comparison, cases) == [expected for _, _, expected in cases]


def test_every_comparison_is_one_ordered_list_of_levels() -> None:
    assert [c.name for c in COMPARISONS] == [
        "family_name",
        "given_name",
        "middle_name",
        "birth_date",
        "sex",
        "identifier",
        "address",
        "phone",
        "accession",
    ]
    for comparison in COMPARISONS:
        first, *middle, last = comparison.levels
        assert first.name == "null" and (first.m, first.u) == (0.0, 0.0)
        assert all(level.mask is not None for level in middle) and last.mask is None
        assert sum(comparison.starting_m) == pytest.approx(1.0)
        assert sum(comparison.prior_u) == pytest.approx(1.0)
        assert comparison.code_of(last.name) == len(comparison.levels) - 1
    assert str(FAMILY_NAME.levels[2]) == "other_name"
    never = Level("never", lambda pairs, where: np.zeros(len(pairs), dtype=bool), 0.5, 0.5)
    with pytest.raises(ValueError, match="first level"):
        Comparison("bad", (never, Level.otherwise("different", 0.5, 0.5)))
    with pytest.raises(ValueError, match="only the last"):
        Comparison("bad", (SEX.levels[0], never))


def test_the_first_level_that_holds_wins_and_later_ones_see_only_open_pairs() -> None:
    null = np.array([True, False, False, False])
    asked: list[list[bool]] = []

    def mask(holds: list[bool]) -> Any:
        def build(where: np.ndarray) -> np.ndarray:
            asked.append(where.tolist())
            return np.array(holds)

        return build

    codes = first_level(null, [mask([True, True, False, False]), mask([True, True, True, False])])
    assert codes.tolist() == [0, 1, 2, 3]
    assert asked == [[False, True, True, True], [False, False, True, True]]


PARAMETERS_BEFORE_LEVELS = {
    "match_rate": 0.93,
    "patients": 1000,
    "m": {
        "family_name": [0.0, 0.82, 0.02, 0.05, 0.02, 0.01, 0.02, 0.06],
        "given_name": [0.0, 0.84, 0.04, 0.04, 0.02, 0.01, 0.01, 0.01, 0.03],
        "birth_date": [0.0, 0.9, 0.02, 0.04, 0.01, 0.03],
        "sex": [0.0, 0.98, 0.02],
        "identifier": [0.0, 0.2, 0.05, 0.75],
        "address": [0.0, 0.8, 0.1, 0.1],
        "phone": [0.0, 0.8, 0.2],
        "accession": [0.0, 0.95, 0.05],
    },
    "u": {
        "family_name": [0.0, 0.003, 0.0005, 0.002, 0.0005, 0.0001, 0.004, 0.9899],
        "given_name": [0.0, 0.01, 0.002, 0.005, 0.005, 0.001, 0.0001, 0.004, 0.9729],
        "birth_date": [0.0, 3e-05, 1e-05, 0.0003, 0.01, 0.98966],
        "sex": [0.0, 0.5, 0.5],
        "identifier": [0.0, 0.001, 0.005, 0.994],
        "address": [0.0, 0.0005, 0.02, 0.9795],
        "phone": [0.0, 1e-05, 0.99999],
        "accession": [0.0, 1e-06, 0.999999],
    },
    "candidate_pairs": 0,
    "random_pairs": 0,
    "em_iterations": 0,
    "em_converged": False,
    "estimated_m": False,
    "keys_version": 2,
}
"""Parameters as a run saved them when comparisons were parallel lists (the starting m, and u
from no random pairs: the prior u)."""


def test_parameters_saved_by_earlier_runs_still_load_and_weigh_the_same() -> None:
    text = json.dumps(PARAMETERS_BEFORE_LEVELS)
    parameters = estimation.Parameters.from_json(text)
    assert parameters is not None
    saved = json.loads(parameters.to_json())
    for part in ("m", "u"):  # a comparison added since (middle_name) starts from its own
        added = saved[part].pop("middle_name")
        assert added == (MIDDLE_NAME.starting_m if part == "m" else MIDDLE_NAME.prior_u)
    assert saved == PARAMETERS_BEFORE_LEVELS
    assert parameters.m == estimation.starting_m()
    prior_u = estimation.estimate_u(np.zeros((0, len(COMPARISONS)), dtype=np.int8))
    for comparison in COMPARISONS:
        assert parameters.m[comparison.name] == [level.m for level in comparison.levels]
        assert parameters.u[comparison.name] == pytest.approx(comparison.prior_u)
        assert parameters.u[comparison.name] == pytest.approx(prior_u[comparison.name])
    assert parameters.weights()[0].tolist() == pytest.approx(
        [0.0, 8.0945176, 5.3219281, 4.6438562, 5.3219281, 6.6438562, 2.3219281, -4.0442484]
    )
    # A form this version does not know (a level more or less) is not used.
    changed = json.loads(text)
    changed["m"]["sex"] = [0.0, 1.0]
    assert estimation.Parameters.from_json(json.dumps(changed)) is None


def test_compare_gives_one_column_per_comparison() -> None:
    cases = [({"family": "SMITH", "sex": "M"}, {"family": "SMITH", "sex": "F"})]
    studies = _records([study for study, _ in cases])
    patients = _records([patient for _, patient in cases])
    levels = compare(Pairs(studies, patients, np.arange(1), np.arange(1)))
    assert levels.dtype == np.int8 and levels.shape == (1, len(COMPARISONS))
    named = {c.name: c.levels[code].name for c, code in zip(COMPARISONS, levels[0], strict=True)}
    assert named["family_name"] == "exact" and named["sex"] == "different"
    assert named["birth_date"] == "null" and named["accession"] == "null"
