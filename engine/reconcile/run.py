"""One reconciliation run: refresh blocking keys, find orphans, compare them with their
candidates, estimate the model, score, and write proposals."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection, Engine, func, insert, select, update

from engine.mpi.tables import Patient
from engine.reconcile import estimation, learning
from engine.reconcile.blocking import KEYS_VERSION, candidates, refresh_keys, second_look
from engine.reconcile.comparisons import (
    ACCESSION,
    BIRTH_DATE,
    COLUMNS,
    COMPARISONS,
    GIVEN_NAME,
    IDENTIFIER,
    compare,
    names_alone,
    share_a_word,
)
from engine.reconcile.kernel import Pairs, Records
from engine.reconcile.names import name_words
from engine.reconcile.proposals import Scored, WriteCounts, decided, write
from engine.reconcile.records import load_patients, load_studies
from engine.reconcile.settings import ReconcilerSettings
from engine.reconcile.tables import ReconcileRun
from engine.store import crypto
from engine.store.schema import table_of
from engine.studies.orphans import Orphan, classify

log = logging.getLogger(__name__)

RANDOM_PATIENTS = 20_000
"""Patients sampled for the random pairs (each paired with many studies)."""
SAME_NAME_PATIENTS = 20
"""Most patients of one name paired with a study in the same-name EM session."""
DEFAULT_MATCH_RATE = 0.9
"""Where the estimate of π starts: most orphans' patients are in the MPI."""
MAX_FREQUENCY_BONUS = 6.0
"""Most bits a rare name adds to an exact match: rare names cluster in families, so a name
seen once in the MPI is not a million-to-one coincidence between relatives."""
SWAPPED_FIELDS = {"family": "given", "given": "family"}
"""Where a swapped name is found in the study: the patient's family name in its given name."""
_runs = table_of(ReconcileRun)
_patients = table_of(Patient)

Progress = Callable[[str, int, int | None], None]
"""(phase, done so far, total or None)."""


@dataclass(slots=True)
class RunReport:
    run_id: int
    orphans: int = 0
    scored: int = 0
    pairs: int = 0
    keys_refreshed: int = 0
    flagged: int = 0
    """Studies scored with implausible values (a birth date that is no calendar date …)."""
    written: WriteCounts = field(default_factory=WriteCounts)
    parameters: estimation.Parameters | None = None


def _previous(connection: Connection) -> tuple[int | None, estimation.Parameters | None]:
    watermark = connection.execute(select(func.max(_runs.c.keys_watermark))).scalar()
    latest = latest_parameters(connection)
    return watermark, latest[2] if latest is not None else None


@dataclass(slots=True)
class MpiScan:
    """What one pass over the live MPI patients gives: their ids, how often each family and
    given name occurs, and the patients of the names wanted (for the same-name EM session)."""

    live: np.ndarray
    frequencies: dict[str, dict[str, float]]
    same_name: dict[tuple[str, str], list[int]]


def scan_mpi(connection: Connection, wanted: set[tuple[str, str]]) -> MpiScan:
    """One pass over the live patients (id, family and given name), in batches."""
    query = select(_patients.c.id, _patients.c.family_name, _patients.c.given_name).where(
        _patients.c.merged_into.is_(None)
    )
    ids: list[int] = []
    family: dict[str, int] = {}
    given: dict[str, int] = {}
    found: dict[tuple[str, str], list[int]] = {}
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(query.compile(dialect=connection.dialect)))
        names = [column[0] for column in cursor.description]
        while batch := crypto.reveal_rows(cursor.fetchmany(50_000), names):
            for patient_id, family_name, given_name in batch:
                ids.append(patient_id)
                key = (name_words(family_name), name_words(given_name))
                family[key[0]] = family.get(key[0], 0) + 1
                given[key[1]] = given.get(key[1], 0) + 1
                if key in wanted:
                    patients = found.setdefault(key, [])
                    if len(patients) < SAME_NAME_PATIENTS:
                        patients.append(patient_id)
    finally:
        cursor.close()
    frequencies = {
        "family": estimation.term_frequencies(family),
        "given": estimation.term_frequencies(given),
    }
    return MpiScan(np.sort(np.asarray(ids, dtype=np.int64)), frequencies, found)


def _random_pairs(
    connection: Connection, studies: Records, live: np.ndarray, settings: ReconcilerSettings
) -> np.ndarray:
    rng = np.random.default_rng(settings.seed)
    if len(live) == 0 or len(studies) == 0:
        return np.zeros((0, len(COMPARISONS)), dtype=np.int8)
    sample = np.sort(rng.choice(live, size=min(RANDOM_PATIENTS, len(live)), replace=False))
    patients = load_patients(connection, sample.tolist())
    count = min(settings.random_pairs, len(studies) * len(patients))
    pairs = Pairs(
        studies,
        patients,
        rng.integers(0, len(studies), size=count),
        rng.integers(0, len(patients), size=count),
    )
    levels = compare(pairs)
    # A random pair that an order or the very same identifier links is one of the few random
    # pairs that match: counted as a non-match it would make that proof look like chance.
    linked = levels[:, COLUMNS["accession"]] == ACCESSION.code_of("order_of_patient")
    same_id = levels[:, COLUMNS["identifier"]] == IDENTIFIER.code_of("same_value")
    return levels[~(linked | same_id)]


def _wanted_names(studies: Records) -> set[tuple[str, str]]:
    return {
        (studies.family[row], studies.given[row])
        for row in range(len(studies))
        if studies.family[row] and studies.given[row]
    }


def _same_name_pairs(connection: Connection, studies: Records, scan: MpiScan) -> np.ndarray:
    """Levels of pairs that agree on family and given name (up to a few patients per study):
    the EM session that learns how birth dates and the rest agree."""
    pairs = [
        (row, patient_id)
        for row in range(len(studies))
        for patient_id in scan.same_name.get((studies.family[row], studies.given[row]), ())
    ]
    ids = sorted({p for _, p in pairs})
    patients = load_patients(connection, ids)
    position = {patient_id: i for i, patient_id in enumerate(patients.keys)}
    pairs = [(row, position[p]) for row, p in pairs if p in position]
    return compare(
        Pairs(
            studies,
            patients,
            np.array([r for r, _ in pairs], dtype=np.int64),
            np.array([p for _, p in pairs], dtype=np.int64),
        )
    )


def estimate(
    candidate_levels: np.ndarray,
    name_levels: np.ndarray,
    random_levels: np.ndarray,
    previous: estimation.Parameters | None,
    settings: ReconcilerSettings,
    patients: int,
) -> estimation.Parameters:
    """u from the random pairs; m by EM (sessions: the candidates with the same birth date;
    pairs with the same name) when there are enough pairs, else the previous run's values."""
    u = estimation.estimate_u(random_levels)
    start = learning.estimated_m(previous) or estimation.starting_m()
    rate = previous.match_rate if previous is not None else DEFAULT_MATCH_RATE
    pairs = len(candidate_levels)
    if pairs < settings.min_em_pairs:
        return estimation.Parameters(rate, patients, start, u, pairs, len(random_levels))
    birth = COLUMNS["birth_date"]
    same_birth = candidate_levels[candidate_levels[:, birth] == BIRTH_DATE.code_of("exact")]
    sessions = [(same_birth, ("birth_date",)), (name_levels, ("family_name", "given_name"))]
    m, iterations, converged = estimation.estimate_m(sessions, u, start, settings.em_iterations)
    return estimation.Parameters(
        rate, patients, m, u, pairs, len(random_levels), iterations, converged, estimated_m=True
    )


def _term_bonus(
    values: list[str], table: dict[str, float], u_exact: float, lowest: float
) -> np.ndarray:
    """Per value, log2(u_exact / its term frequency), between ``lowest`` and
    ``MAX_FREQUENCY_BONUS``."""
    floor = u_exact / 2**MAX_FREQUENCY_BONUS
    shares = np.fromiter(
        (max(table.get(value, 0.0), floor) for value in values), dtype=float, count=len(values)
    )
    return np.maximum(np.log2(u_exact / shares), lowest)


def _frequency_bonus(
    levels: np.ndarray,
    pairs: Pairs,
    parameters: estimation.Parameters,
    frequencies: dict[str, dict[str, float]],
) -> dict[str, np.ndarray]:
    """Per pair, log2(u_exact / tf(value)) where the level is ``exact``: rare names weigh
    more, common ones less, but an exact match never less than a near spelling (NANCY =
    NANCY is better evidence than NANCY ~ NANCIE, however common NANCY is). A near spelling
    (``similar``, ``phonetic``) of a rare name weighs more by the frequency of the patient's
    name: SANDOVL for SANDOVAL more than MILLWR for MILLER (never less than the level).

    Swapped names are adjusted to weigh what the same names in the right fields would: the
    family and the given name swapped are one observation, not two rare coincidences (names
    swapped and misspelt weigh as near spellings)."""
    weights = parameters.weights()
    out = {}
    for column, comparison in enumerate(COMPARISONS):
        if not comparison.frequency_field:
            continue
        table = frequencies[comparison.frequency_field]
        exact = comparison.code_of("exact")
        u_exact = parameters.u[comparison.name][exact]
        spellings = [comparison.code_of(level) for level in comparison.spellings]
        lowest = float(weights[column][spellings].max() - weights[column][exact])
        level = levels[:, column]
        studies = pairs.studies
        values = getattr(studies, comparison.frequency_field)
        by_study = _term_bonus(values, table, u_exact, lowest)
        bonus = np.where(level == exact, by_study[pairs.study_rows], 0.0)
        # A slip of a rare name is about as rare as the name: the chance that a random
        # patient's name is one slip from the study's is about that of the commoner of the two
        # (DAVIS for DAVID: DAVIS is common). A common name's slip keeps the level's weight
        # (a small MPI's frequencies say little).
        field = comparison.frequency_field
        spelt = np.flatnonzero(np.isin(level, spellings))
        bonus[spelt] = np.minimum(
            _term_bonus(pairs.values("p", field, spelt), table, u_exact, 0.0),
            _term_bonus(pairs.values("s", field, spelt), table, u_exact, 0.0),
        )
        if "swapped" in comparison.names:
            swapped = comparison.code_of("swapped")
            crossed_field = SWAPPED_FIELDS[field]
            crossed = getattr(studies, crossed_field)
            as_exact = (
                weights[column][exact]
                - weights[column][swapped]
                + _term_bonus(crossed, table, u_exact, lowest)
            )
            # Swapped names that are only near spellings of each other weigh as near spellings.
            as_spelt = weights[column][spellings].max() - weights[column][swapped]
            same = share_a_word(pairs, ("s", crossed_field), ("p", field))
            bonus = np.where(
                level == swapped, np.where(same, as_exact[pairs.study_rows], as_spelt), bonus
            )
        out[comparison.name] = bonus
    return out


def _evidence(
    levels: np.ndarray, weights: np.ndarray, prior: float, *learnt: dict[str, object]
) -> str:
    items: list[dict[str, object]] = [{"field": "prior", "level": "", "weight": round(prior, 3)}]
    for column, comparison in enumerate(COMPARISONS):
        level = int(levels[column])
        items.append(
            {
                "field": comparison.name,
                "level": comparison.levels[level].name,
                "weight": round(float(weights[column]), 3),
            }
        )
    return json.dumps(items + list(learnt))


def score(
    levels: np.ndarray,
    pairs: Pairs,
    parameters: estimation.Parameters,
    frequencies: dict[str, dict[str, float]],
    settings: ReconcilerSettings,
    study_uids: list[str],
    learnt: learning.Learnt | None = None,
) -> list[Scored]:
    """The candidates worth proposing: exclusive probability ≥ ``possible``, best first;
    ``learnt``: reviewers' decisions move the probabilities of the patterns they decided."""
    adjustments = (
        _frequency_bonus(levels, pairs, parameters, frequencies)
        if settings.term_frequencies
        else None
    )
    weights = estimation.match_weights(levels, parameters, adjustments)
    bayes = weights.sum(axis=1)
    if parameters.estimated_m:
        parameters.match_rate = estimation.estimate_match_rate(
            pairs.study_rows, bayes, len(study_uids), parameters.patients, parameters.match_rate
        )
    prior = estimation.prior_log2_odds(parameters.match_rate, parameters.patients)
    total = bayes + prior
    model = estimation.exclusive_probabilities(
        pairs.study_rows, total, len(study_uids), parameters.match_rate
    )
    which = learnt.patterns_of(levels) if learnt is not None else np.full(len(model), -1)
    probability = learnt.adjust(which, model) if learnt is not None else model
    keep = np.flatnonzero(probability >= settings.possible)
    given = COLUMNS["given_name"]
    different = GIVEN_NAME.code_of("different")
    alone = names_alone(levels)
    order = keep[np.lexsort((-probability[keep], pairs.study_rows[keep]))]
    scored: list[Scored] = []
    rank = 0
    last_study = -1
    for row in order.tolist():
        study = int(pairs.study_rows[row])
        rank = rank + 1 if study == last_study else 1
        last_study = study
        if rank > settings.max_candidates:
            continue
        p = float(probability[row])
        moved = learnt.evidence(int(which[row]), float(model[row]), p) if learnt else []
        scored.append(
            Scored(
                study_uids[study],
                pairs.patients.keys[int(pairs.patient_rows[row])],
                p,
                float(total[row] - prior) + sum(float(item["weight"]) for item in moved),
                settings.band(
                    p,
                    int(levels[row, given]) == different,
                    GIVEN_NAME.levels[int(levels[row, given])].name if alone[row] else "",
                ),
                rank,
                _evidence(levels[row], weights[row], prior, *moved),
            )
        )
    return scored


def _looked_again(
    connection: Connection,
    pairs: Pairs,
    levels: np.ndarray,
    rows: list[int],
    max_block_size: int,
    rejected: set[tuple[str, int]],
    uids: list[str],
) -> tuple[Pairs, np.ndarray] | None:
    """``pairs`` and ``levels`` with the pairs ``blocking.second_look`` finds for the
    unresolved studies ``rows`` added (compared; not those already there nor rejected); None
    when it finds none."""
    study_rows, patient_ids = second_look(connection, pairs.studies, rows, max_block_size)
    known = np.asarray(pairs.patients.keys, dtype=np.int64)
    if not study_rows or not len(known):
        return None
    span = max(max(patient_ids), int(known.max())) + 1
    asked = np.unique(np.asarray(study_rows, dtype=np.int64) * span + np.asarray(patient_ids))
    mine = np.isin(pairs.study_rows, rows)
    asked = asked[~np.isin(asked, pairs.study_rows[mine] * span + known[pairs.patient_rows[mine]])]
    if rejected:
        keep = [(uids[code // span], code % span) not in rejected for code in asked.tolist()]
        asked = asked[np.asarray(keep, dtype=bool)]
    wanted = asked % span
    at = np.minimum(np.searchsorted(known, wanted), len(known) - 1)
    old = known[at] == wanted
    added = load_patients(connection, np.unique(wanted[~old]).tolist())
    new_ids = np.asarray(added.keys, dtype=np.int64)
    at_new = np.minimum(np.searchsorted(new_ids, wanted), max(len(new_ids) - 1, 0))
    new = ~old & (new_ids[at_new] == wanted if len(new_ids) else False)  # merged since: gone
    if not (old | new).any():
        return None
    # Compared over just their patients (coding every patient's values again costs seconds).
    used = np.unique(at[old])
    records = pairs.patients.taken(used.tolist()).joined(added)
    positions = np.where(old, np.searchsorted(used, at), len(used) + at_new)
    chosen = old | new
    more = Pairs(pairs.studies, records, asked[chosen] // span, positions[chosen])
    everyone = Pairs(
        pairs.studies,
        pairs.patients.joined(added),
        np.concatenate([pairs.study_rows, more.study_rows]),
        np.concatenate([pairs.patient_rows, np.where(old, at, len(known) + at_new)[chosen]]),
    )
    return everyone, np.concatenate([levels, compare(more)])


def reconcile(
    store: Engine,
    settings: ReconcilerSettings,
    *,
    since: str = "",
    rebuild_keys: bool = False,
    progress: Progress | None = None,
    machine_decided: learning.MachineDecided | None = None,
) -> RunReport:
    """Score every orphaned study (with study date ≥ ``since``) and write proposals, the
    model refined by reviewers' decisions (``settings.learning``; ``machine_decided`` names
    the approvals an automatic band made, which are not learnt from)."""
    report_progress: Progress = progress or (lambda _phase, _done, _total: None)
    with store.begin() as connection:
        watermark, previous = _previous(connection)
        key = connection.execute(
            insert(_runs).values(started_at=datetime.now(UTC), status="running", since=since)
        ).inserted_primary_key
        assert key is not None  # a single-row INSERT always has its key
        run_id = key[0]
    report = RunReport(run_id)
    try:
        _reconcile(
            store,
            settings,
            since,
            rebuild_keys,
            (watermark, previous),
            report,
            report_progress,
            machine_decided,
        )
    except BaseException:
        with store.begin() as connection:
            connection.execute(
                update(_runs)
                .where(_runs.c.id == run_id)
                .values(status="failed", finished_at=datetime.now(UTC))
            )
        raise
    return report


def _reconcile(
    store: Engine,
    settings: ReconcilerSettings,
    since: str,
    rebuild_keys: bool,
    last_run: tuple[int | None, estimation.Parameters | None],
    report: RunReport,
    progress: Progress,
    machine_decided: learning.MachineDecided | None,
) -> None:
    watermark, previous = last_run
    current = previous is not None and previous.keys_version == KEYS_VERSION
    start = watermark if current and not rebuild_keys else None
    done = 0

    def keys_progress(count: int) -> None:
        nonlocal done
        done += count
        report.keys_refreshed = done
        progress("keys", done, None)

    new_watermark = refresh_keys(store, start, keys_progress)
    with store.begin() as connection:
        connection.execute(
            update(_runs).where(_runs.c.id == report.run_id).values(keys_watermark=new_watermark)
        )
    progress("orphans", 0, None)
    orphans = [o for o in classify(store, settings=settings) if isinstance(o, Orphan)]
    report.orphans = len(orphans)
    with store.connect() as connection:
        approved, rejected = decided(connection)
        chosen = [
            o
            for o in orphans
            if o.study.study_uid not in approved and (not since or o.study.study_date >= since)
        ]
        report.scored = len(chosen)
        report.flagged = sum(1 for o in chosen if o.flags)
        progress("orphans", len(chosen), len(chosen))
        uids = [o.study.study_uid for o in chosen]
        studies = load_studies(connection, [o.study for o in chosen], settings)
        extra = {row: {o.survivor} for row, o in enumerate(chosen) if o.survivor is not None}
        study_rows, positions, ids = candidates(connection, studies, settings.max_block_size, extra)
        patients = load_patients(connection, ids)
        where = np.full(len(ids), -1, dtype=np.int64)
        where[np.searchsorted(ids, patients.keys)] = np.arange(len(patients))
        mapped = where[positions]
        keep = mapped >= 0
        if rejected:
            keep &= np.array(
                [
                    (uids[s], ids[p]) not in rejected
                    for s, p in zip(study_rows.tolist(), positions.tolist(), strict=True)
                ],
                dtype=bool,
            )
        pairs = Pairs(studies, patients, study_rows[keep], mapped[keep])
        report.pairs = len(pairs)
        progress("compare", 0, len(pairs))
        levels = compare(pairs)
        progress("compare", len(pairs), len(pairs))
        scan = scan_mpi(connection, _wanted_names(studies))
        random_levels = _random_pairs(connection, studies, scan.live, settings)
        name_levels = _same_name_pairs(connection, studies, scan)
        labelled = (
            learning.labelled_pairs(connection, machine_decided) if settings.learning else None
        )
    frequencies = scan.frequencies
    live = scan.live
    parameters = estimate(levels, name_levels, random_levels, previous, settings, len(live))
    parameters.keys_version = KEYS_VERSION
    report.parameters = parameters
    learnt = None
    if labelled is not None:
        learnt = learning.learn(
            parameters, labelled, settings.strong, settings.learning_prior_weight
        )
        parameters.learning = learnt.to_dict()
        settings = replace(settings, strong=learnt.strong_after)
    scored = score(levels, pairs, parameters, frequencies, settings, uids, learnt)
    resolved = {item.study_uid for item in scored}
    unresolved = [row for row, uid in enumerate(uids) if uid not in resolved]
    with store.connect() as connection:
        more = _looked_again(
            connection, pairs, levels, unresolved, settings.max_block_size, rejected, uids
        )
    if more is not None:
        pairs, levels = more
        report.pairs = len(pairs)
        scored = score(levels, pairs, parameters, frequencies, settings, uids, learnt)
    with store.begin() as connection:
        report.written = write(
            connection, report.run_id, scored, set(uids), {o.study.study_uid for o in orphans}
        )
        connection.execute(
            update(_runs)
            .where(_runs.c.id == report.run_id)
            .values(
                status="finished",
                finished_at=datetime.now(UTC),
                orphans=report.orphans,
                pairs=report.pairs,
                proposals=len(scored),
                parameters=parameters.to_json(),
            )
        )
    log.info(
        "reconcile run %d: %d orphans scored, %d pairs, %d proposals",
        report.run_id,
        report.scored,
        report.pairs,
        len(scored),
    )


def latest_parameters(connection: Connection) -> tuple[int, datetime, estimation.Parameters] | None:
    """The parameters of the newest finished run: (run id, finished at, parameters)."""
    row = connection.execute(
        select(_runs.c.id, _runs.c.finished_at, _runs.c.parameters)
        .where(_runs.c.status == "finished", _runs.c.parameters != "")
        .order_by(_runs.c.id.desc())
        .limit(1)
    ).first()
    parameters = estimation.Parameters.from_json(row.parameters) if row is not None else None
    if row is None or parameters is None:
        return None
    return row.id, row.finished_at, parameters
