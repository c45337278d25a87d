"""Learning from reviewers: decided proposals refine the model of the next run, a little."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select

from engine.config.loader import load_config
from engine.mpi.importer import MpiImport
from engine.reconcile.comparisons import COMPARISONS
from engine.reconcile.estimation import Parameters, starting_m
from engine.reconcile.learning import REVIEWERS, Labelled, Learnt, Pattern, learn
from engine.reconcile.run import latest_parameters, reconcile
from engine.reconcile.settings import ReconcilerSettings
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.review.decisions import reject
from engine.settings import ConfigError
from engine.studies.importer import StudyImport
from tests.support import config_folder, run_crosswalk
from tests.test_reconcile import MPI_HEADER, STUDY_HEADER, study, write

SETTINGS = ReconcilerSettings(min_em_pairs=10**9, strong=0.95)
"""Small data: the starting m, so that only what reviewers decided moves the model (and a
strong threshold the pattern below reaches)."""
FAMILIES = (
    "ABERNATHY",
    "ACHTERBERG",
    "BALDACCI",
    "CZARNECKI",
    "DELACROIX",
    "EKWUEME",
    "FAIRBAIRN",
    "GALLAGHER",
    "HALVORSEN",
    "IBARGUEN",
    "JANKOWSKI",
    "KILPATRICK",
    "LINDQVIST",
    "MACALLISTER",
    "NAKAMURA",
    "OYELARAN",
    "PETROSYAN",
    "QUINTANILLA",
    "RADEMACHER",
    "SZYMANSKI",
)
GIVENS = ["ADELINE", "BARNABY", "CORDELIA", "DESMOND", "EVANGELINE", "FITZGERALD"]


def _people() -> tuple[list[str], list[str]]:
    """An MPI of 20 patients, and a study of each whose birth date is one digit off (the day's
    last digit): one error pattern, the same in every pair."""
    mpi, studies = [], []
    for n, family in enumerate(FAMILIES):
        given = GIVENS[n % len(GIVENS)]
        born = f"19{50 + n}-0{1 + n % 9}-1{n % 8}"
        typo = f"{born[:-1]}{int(born[-1]) + 1}"
        mpi.append(f"{700 + n},GENHOSP,{family},{given},,{born},F,{n} ELM ST,627{n:02d}")
        studies.append(study(f"8.{n}", f"X{n}", f"{family}^{given}", typo, "F"))
    return mpi, studies


def _load(store: Engine, tmp_path: Path) -> None:
    mpi, studies = _people()
    MpiImport(store, write(tmp_path / "mpi.csv", MPI_HEADER, mpi)).run()
    StudyImport(store, write(tmp_path / "studies.csv", STUDY_HEADER, studies)).run()


def _probabilities(store: Engine) -> dict[str, tuple[int, float, str, str]]:
    """Study uid → (proposal id, probability, status, evidence) of its best candidate."""
    p = Proposal.__table__
    query = select(p.c.study_uid, p.c.id, p.c.probability, p.c.status, p.c.evidence).where(
        p.c.rank == 1
    )
    with store.connect() as connection:
        return {
            uid: (pid, prob, status, ev) for uid, pid, prob, status, ev in connection.execute(query)
        }


def _by_field(evidence: str) -> dict[str, dict[str, object]]:
    """A proposal's evidence items by comparison (and ``prior``, reviewers')."""
    return {item["field"]: item for item in json.loads(evidence)}


def _reject(store: Engine, found: dict[str, tuple[int, float, str, str]], count: int) -> None:
    pending = [uid for uid in sorted(found) if found[uid][2] == ProposalStatus.PENDING]
    for uid in pending[:count]:
        reject(store, found[uid][0], "r.reviewer", "a different patient: other parents")


def _learnt(store: Engine) -> Learnt:
    with store.connect() as connection:
        latest = latest_parameters(connection)
    assert latest is not None
    learnt = Learnt.from_dict(latest[2].learning)
    assert learnt is not None
    return learnt


def test_rejections_of_one_error_pattern_lower_it_in_the_next_run(
    store: Engine, tmp_path: Path
) -> None:
    _load(store, tmp_path)
    reconcile(store, SETTINGS)
    before = _probabilities(store)
    assert len(before) == len(FAMILIES)
    assert all(
        _by_field(ev)["birth_date"]["level"] == "one_digit" for _i, _p, _s, ev in before.values()
    )
    _reject(store, before, 8)
    reconcile(store, SETTINGS)
    after = _probabilities(store)
    still_open = [uid for uid in after if after[uid][2] == ProposalStatus.PENDING]
    assert len(still_open) == len(FAMILIES) - 8
    weight = SETTINGS.learning_prior_weight
    for uid in still_open:
        old, new = before[uid][1], after[uid][1]
        assert new < old
        assert new == pytest.approx(weight * old / (weight + 8))
        items = _by_field(after[uid][3])
        assert items[REVIEWERS]["level"] == "0 of 8 approved" and items[REVIEWERS]["weight"] < 0
    learnt = _learnt(store)
    assert (learnt.approved, learnt.rejected, learnt.left_out) == (0, 8, 0)
    (pattern,) = learnt.patterns
    assert pattern.levels["birth_date"] == "one_digit" and pattern.decided == 8
    assert pattern.model == pytest.approx(sum(before[uid][1] for uid in sorted(before)[:8]) / 8)
    # The pattern itself left the strong band: the threshold need not rise for it.
    assert all(after[uid][1] < SETTINGS.strong for uid in still_open)
    assert learnt.strong_after == SETTINGS.strong
    # Decisions are read as scored: a third run learns the same, not twice as much.
    reconcile(store, SETTINGS)
    assert _probabilities(store) == after


def test_one_or_two_decisions_move_a_pattern_only_a_little(store: Engine, tmp_path: Path) -> None:
    _load(store, tmp_path)
    reconcile(store, SETTINGS)
    before = _probabilities(store)
    for decided in (1, 2):
        _reject(store, _probabilities(store), 1)
        reconcile(store, SETTINGS)
        after = _probabilities(store)
        moved = [before[uid][1] - after[uid][1] for uid in after if after[uid][2] == "pending"]
        bound = decided / (SETTINGS.learning_prior_weight + decided)
        assert moved and all(0 < change <= bound for change in moved)
        assert all(after[uid][1] > SETTINGS.strong - bound for uid in after)


def test_no_decisions_change_nothing_and_learning_can_be_turned_off(
    store: Engine, tmp_path: Path
) -> None:
    _load(store, tmp_path)
    first = reconcile(store, SETTINGS).parameters
    before = _probabilities(store)
    second = reconcile(store, SETTINGS).parameters
    assert first is not None and second is not None
    assert second.m == first.m and _probabilities(store) == before
    learnt = _learnt(store)
    assert (learnt.approved, learnt.rejected, learnt.patterns) == (0, 0, [])
    assert learnt.strong_after == learnt.strong_before == SETTINGS.strong
    _reject(store, before, 5)
    off = dataclasses.replace(SETTINGS, learning=False)
    third = reconcile(store, off).parameters
    assert third is not None and third.learning is None and third.m == first.m
    after = _probabilities(store)
    assert all(after[uid][1] == before[uid][1] for uid in after if after[uid][2] == "pending")


def test_approvals_refine_m_by_what_the_model_doubted_and_automatic_ones_are_left_out(
    store: Engine, tmp_path: Path
) -> None:
    _load(store, tmp_path)
    start = reconcile(store, SETTINGS).parameters
    assert start is not None
    found = _probabilities(store)
    table = Proposal.__table__
    chosen = sorted(found)[:6]
    with store.begin() as connection:  # as `review approve` leaves them (merges not needed here)
        connection.execute(
            table.update()
            .where(table.c.id.in_([found[uid][0] for uid in chosen]))
            .values(status=ProposalStatus.APPROVED)
        )
    learnt = reconcile(store, SETTINGS).parameters
    assert learnt is not None
    weight = SETTINGS.learning_prior_weight
    one_digit = 3  # birth_date levels: null, exact, day_month_swapped, one_digit, …
    m_before = start.m["birth_date"][one_digit]
    doubted = sum(1 - found[uid][1] for uid in chosen)
    assert 0 < doubted < 6
    assert learnt.m["birth_date"][one_digit] == pytest.approx(
        (weight * m_before + doubted) / (weight + doubted)
    )
    assert learnt.m["birth_date"][one_digit] > m_before
    assert sum(learnt.m["birth_date"][1:]) == pytest.approx(1.0)
    # Approvals made by an automatic band are the model's own: not learnt from.
    automatic = {found[uid][0] for uid in chosen[:4]}
    by_band = reconcile(store, SETTINGS, machine_decided=lambda _c: automatic).parameters
    assert by_band is not None
    rest = sum(1 - found[uid][1] for uid in chosen[4:])
    assert by_band.m["birth_date"][one_digit] == pytest.approx(
        (weight * m_before + rest) / (weight + rest)
    )
    assert _learnt(store).left_out == 4


def test_learning_settings_are_checked_with_file_and_line(tmp_path: Path) -> None:
    folder = config_folder(tmp_path, "reconciler:\n  learning_prior_weight: 0\n")
    with pytest.raises(ConfigError) as error:
        load_config(folder)
    assert "learning_prior_weight must be at least 1" in str(error.value)
    assert "routes.yaml:2" in str(error.value)


def test_cli_shows_what_decisions_moved(db_url: str, store: Engine, tmp_path: Path) -> None:
    _load(store, tmp_path)
    assert run_crosswalk("reconcile", "run", "--db", db_url).returncode == 0
    none_yet = run_crosswalk("reconcile", "params", "--changes", "--db", db_url)
    assert none_yet.returncode == 0 and "0 approved and 0 rejected" in none_yet.stdout
    _reject(store, _probabilities(store), 3)
    ran = run_crosswalk("reconcile", "run", "--db", db_url)
    assert ran.returncode == 0, ran.stderr
    assert "learnt from 3 reviewers' decisions (0 approved, 3 rejected)" in ran.stdout
    plain = run_crosswalk("reconcile", "params", "--db", db_url)
    assert "refined by 3 reviewers' decisions" in plain.stdout
    shown = run_crosswalk("reconcile", "params", "--changes", "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    assert "0 approved and 3 rejected" in shown.stdout and "m before" in shown.stdout
    assert "birth_date=one_digit" in shown.stdout and "strong threshold: 0.99" in shown.stdout
    moved = next(
        pid for pid, _p, status, _e in _probabilities(store).values() if status == "pending"
    )
    screen = run_crosswalk("review", "show", str(moved), "--db", db_url)
    assert screen.returncode == 0, screen.stderr
    assert "reviewers (0 of 3 approved)" in screen.stdout
    as_json = run_crosswalk("reconcile", "params", "--changes", "--format", "json", "--db", db_url)
    changes = json.loads(as_json.stdout)
    assert changes["rejected"] == 3 and changes["patterns"][0]["decided"] == 3


def test_a_pattern_of_levels_no_longer_known_applies_to_no_pair() -> None:
    levels = np.array(
        [
            [c.code_of(c.names[1]) for c in COMPARISONS],
            [c.code_of(c.names[-1]) for c in COMPARISONS],
        ],
        dtype=np.int8,
    )
    first = {c.name: c.names[1] for c in COMPARISONS}
    vanished = {**first, "birth_date": "a level since renamed"}
    learnt = Learnt(
        100.0,
        patterns=[Pattern(vanished, 5, 0, 0.99), Pattern(first, 4, 0, 0.99)],
    )
    which = learnt.patterns_of(levels)
    assert which.tolist() == [1, -1]
    moved = learnt.adjust(which, np.array([0.99, 0.99]))
    assert moved[0] == pytest.approx(99 / 104) and moved[1] == 0.99
    assert learnt.evidence(-1, 0.99, 0.99) == []
    assert learnt.evidence(1, 0.99, moved[0])[0]["level"] == "0 of 4 approved"
    assert Learnt.from_dict({"prior_weight": 100.0, "unknown": 1}) is None
    assert Learnt.from_dict(None) is None


def _labelled(groups: list[tuple[int, int, float, bool]]) -> Labelled:
    """(pattern: which level of every comparison, pairs, probability, approved) per group."""
    rows, approved, probability = [], [], []
    for level, count, p, yes in groups:
        rows += [[min(level, len(c.names) - 1) for c in COMPARISONS]] * count
        approved += [yes] * count
        probability += [p] * count
    return Labelled(
        np.array(rows, dtype=np.int8),
        np.array(approved),
        np.array(probability),
        np.ones(len(rows), dtype=bool),
    )


def _parameters() -> Parameters:
    return Parameters(0.9, 1000, starting_m(), {c.name: c.prior_u for c in COMPARISONS})


def test_the_strong_threshold_rises_only_for_what_the_patterns_left_strong() -> None:
    strong, weight = 0.99, 100.0
    # A near-certain pattern rejected once stays strong after its pattern moved (0.9901):
    # the threshold rises above it, within its ceiling.
    near_certain = _labelled([(1, 50, 0.9999, True), (2, 1, 0.999999, False)])
    learnt = learn(_parameters(), near_certain, strong, weight)
    (rejected,) = [p for p in learnt.patterns if p.approved == 0]
    still = rejected.adjusted(0.999999, weight)
    assert still >= strong
    assert still < learnt.strong_after <= 1 - (1 - strong) / 10
    # A pattern its rejections took out of the band raises nothing.
    explained = _labelled([(1, 50, 0.9999, True), (2, 3, 0.995, False)])
    assert learn(_parameters(), explained, strong, weight).strong_after == strong
    # Pairs that were not strong when decided (a twin capped at possible) never count.
    twins = _labelled([(2, 5, 0.9999999, False)])
    twins.strong[:] = False
    assert learn(_parameters(), twins, strong, weight).strong_after == strong
