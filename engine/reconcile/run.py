"""One reconciliation run: refresh blocking keys, find orphans, compare them with their
candidates, estimate the model, score, and write proposals."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection, Engine, func, insert, select, update

from engine.mpi.tables import Patient
from engine.reconcile import model
from engine.reconcile.blocking import candidates, refresh_keys
from engine.reconcile.comparisons import COMPARISONS, Pairs, Records, compare
from engine.reconcile.names import name_words
from engine.reconcile.proposals import Scored, WriteCounts, decided, write
from engine.reconcile.records import chunks, load_patients, load_studies
from engine.reconcile.settings import ReconcilerSettings
from engine.reconcile.tables import ReconcileRun
from engine.store.fastsql import in_values
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
_runs = ReconcileRun.__table__
_patients = Patient.__table__
FREQUENCY_COLUMNS = {"family_name": "family", "given_name": "given"}

Progress = Callable[[str, int, int | None], None]
"""(phase, done so far, total or None)."""


@dataclass(slots=True)
class RunReport:
    run_id: int
    orphans: int = 0
    scored: int = 0
    pairs: int = 0
    keys_refreshed: int = 0
    written: WriteCounts = field(default_factory=WriteCounts)
    parameters: model.Parameters | None = None


def _previous(connection: Connection) -> tuple[int | None, model.Parameters | None]:
    watermark = connection.execute(select(func.max(_runs.c.keys_watermark))).scalar()
    latest = latest_parameters(connection)
    return watermark, latest[2] if latest is not None else None


def _frequencies(connection: Connection, column: str) -> dict[str, float]:
    counts: dict[str, int] = {}
    query = (
        select(_patients.c[column], func.count())
        .where(_patients.c.merged_into.is_(None))
        .group_by(_patients.c[column])
    )
    for value, count in connection.execute(query):
        key = name_words(value)
        counts[key] = counts.get(key, 0) + count
    return model.term_frequencies(counts)


def _live_ids(connection: Connection) -> np.ndarray:
    query = select(_patients.c.id).where(_patients.c.merged_into.is_(None))
    return np.fromiter(connection.execute(query).scalars(), dtype=np.int64)


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
    names = [c.name for c in COMPARISONS]
    linked = levels[:, names.index("accession")] == 1
    same_id = levels[:, names.index("identifier")] == 1
    return levels[~(linked | same_id)]


def _same_name_pairs(connection: Connection, chosen: list[Orphan], studies: Records) -> np.ndarray:
    """Levels of pairs that agree on family and given name (up to a few patients per study):
    the EM session that learns how birth dates and the rest agree."""
    wanted: dict[tuple[str, str], list[int]] = {}
    for row in range(len(chosen)):
        if studies.family[row] and studies.given[row]:
            key = (studies.family[row], studies.given[row])
            wanted.setdefault(key, []).append(row)
    raw = sorted({o.study.family_name for row, o in enumerate(chosen) if studies.family[row]})
    found: dict[tuple[str, str], list[int]] = {}
    for chunk in chunks(raw):
        query = select(_patients.c.id, _patients.c.family_name, _patients.c.given_name).where(
            in_values(_patients.c.family_name, chunk), _patients.c.merged_into.is_(None)
        )
        for patient_id, family, given in connection.execute(query):
            key = (name_words(family), name_words(given))
            if key in wanted and len(found.setdefault(key, [])) < SAME_NAME_PATIENTS:
                found[key].append(patient_id)
    pairs = [(row, p) for key, ids in found.items() for row in wanted[key] for p in ids]
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
    previous: model.Parameters | None,
    settings: ReconcilerSettings,
    patients: int,
) -> model.Parameters:
    """u from the random pairs; m by EM (sessions: the candidates with the same birth date;
    pairs with the same name) when there are enough pairs, else the previous run's values."""
    u = model.estimate_u(random_levels)
    start = previous.m if previous is not None else model.starting_m()
    rate = previous.match_rate if previous is not None else DEFAULT_MATCH_RATE
    pairs = len(candidate_levels)
    if pairs < settings.min_em_pairs:
        return model.Parameters(rate, patients, start, u, pairs, len(random_levels))
    birth = [c.name for c in COMPARISONS].index("birth_date")
    same_birth = candidate_levels[candidate_levels[:, birth] == 1]
    sessions = [(same_birth, ("birth_date",)), (name_levels, ("family_name", "given_name"))]
    m, iterations, converged = model.estimate_m(sessions, u, start, settings.em_iterations)
    return model.Parameters(
        rate, patients, m, u, pairs, len(random_levels), iterations, converged, estimated_m=True
    )


def _frequency_bonus(
    levels: np.ndarray,
    pairs: Pairs,
    parameters: model.Parameters,
    frequencies: dict[str, dict[str, float]],
) -> dict[str, np.ndarray]:
    """Per pair, log2(u_exact / tf(value)) where the level is ``exact``: rare names weigh
    more, common ones less, but an exact match never less than a near one (NANCY = NANCY
    is better evidence than NANCY ~ NANCIE, however common NANCY is)."""
    weights = parameters.weights()
    out = {}
    for column, comparison in enumerate(COMPARISONS):
        if not comparison.frequency_field:
            continue
        table = frequencies[comparison.frequency_field]
        exact = comparison.levels.index("exact")
        u_exact = parameters.u[comparison.name][exact]
        bonus = np.zeros(len(pairs))
        rows = np.flatnonzero(levels[:, column] == exact)
        values = pairs.column("s", comparison.frequency_field)
        floor = u_exact / 2**MAX_FREQUENCY_BONUS
        lowest = float(weights[column][exact + 1 :].max() - weights[column][exact])
        for row in rows.tolist():
            share = max(table.get(values[row], 0.0), floor)
            bonus[row] = max(float(np.log2(u_exact / share)), lowest)
        out[comparison.name] = bonus
    return out


def _evidence(levels: np.ndarray, weights: np.ndarray, prior: float) -> str:
    items = [{"field": "prior", "level": "", "weight": round(prior, 3)}]
    for column, comparison in enumerate(COMPARISONS):
        level = int(levels[column])
        items.append(
            {
                "field": comparison.name,
                "level": comparison.levels[level],
                "weight": round(float(weights[column]), 3),
            }
        )
    return json.dumps(items)


def score(
    levels: np.ndarray,
    pairs: Pairs,
    parameters: model.Parameters,
    frequencies: dict[str, dict[str, float]],
    settings: ReconcilerSettings,
    study_uids: list[str],
) -> list[Scored]:
    """The candidates worth proposing: exclusive probability ≥ ``possible``, best first."""
    adjustments = (
        _frequency_bonus(levels, pairs, parameters, frequencies)
        if settings.term_frequencies
        else None
    )
    weights = model.match_weights(levels, parameters, adjustments)
    bayes = weights.sum(axis=1)
    if parameters.estimated_m:
        parameters.match_rate = model.estimate_match_rate(
            pairs.study_rows, bayes, len(study_uids), parameters.patients, parameters.match_rate
        )
    prior = model.prior_log2_odds(parameters.match_rate, parameters.patients)
    total = bayes + prior
    probability = model.exclusive_probabilities(pairs.study_rows, total, len(study_uids))
    keep = np.flatnonzero(probability >= settings.possible)
    given = [c.name for c in COMPARISONS].index("given_name")
    different = COMPARISONS[given].levels.index("different")
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
        scored.append(
            Scored(
                study_uids[study],
                pairs.patients.keys[int(pairs.patient_rows[row])],
                p,
                float(total[row] - prior),
                settings.band(p, int(levels[row, given]) == different),
                rank,
                _evidence(levels[row], weights[row], prior),
            )
        )
    return scored


def reconcile(
    store: Engine,
    settings: ReconcilerSettings,
    *,
    since: str = "",
    rebuild_keys: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Score every orphaned study (with study date ≥ ``since``) and write proposals."""
    report_progress: Progress = progress or (lambda _phase, _done, _total: None)
    with store.begin() as connection:
        watermark, previous = _previous(connection)
        run_id = connection.execute(
            insert(_runs).values(started_at=datetime.now(UTC), status="running", since=since)
        ).inserted_primary_key[0]
    report = RunReport(run_id)
    try:
        _reconcile(
            store, settings, since, rebuild_keys, watermark, previous, report, report_progress
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
    watermark: int | None,
    previous: model.Parameters | None,
    report: RunReport,
    progress: Progress,
) -> None:
    start = None if rebuild_keys else watermark
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
    orphans = [o for o in classify(store) if isinstance(o, Orphan)]
    report.orphans = len(orphans)
    with store.connect() as connection:
        approved, rejected = decided(connection)
        chosen = [
            o
            for o in orphans
            if o.study.study_uid not in approved and (not since or o.study.study_date >= since)
        ]
        report.scored = len(chosen)
        progress("orphans", len(chosen), len(chosen))
        uids = [o.study.study_uid for o in chosen]
        studies = load_studies(connection, [o.study for o in chosen], settings)
        extra = {row: {o.survivor} for row, o in enumerate(chosen) if o.survivor is not None}
        study_rows, positions, ids = candidates(connection, studies, settings.max_block_size, extra)
        patients = load_patients(connection, ids)
        where = {patient_id: row for row, patient_id in enumerate(patients.keys)}
        mapped = np.array([where.get(ids[p], -1) for p in positions.tolist()], dtype=np.int64)
        keep = np.array(
            [
                mapped[i] >= 0 and (uids[study_rows[i]], ids[positions[i]]) not in rejected
                for i in range(len(mapped))
            ],
            dtype=bool,
        )
        pairs = Pairs(studies, patients, study_rows[keep], mapped[keep])
        report.pairs = len(pairs)
        progress("compare", 0, len(pairs))
        levels = compare(pairs)
        progress("compare", len(pairs), len(pairs))
        live = _live_ids(connection)
        random_levels = _random_pairs(connection, studies, live, settings)
        name_levels = _same_name_pairs(connection, chosen, studies)
        frequencies = {
            field_name: _frequencies(connection, column)
            for column, field_name in FREQUENCY_COLUMNS.items()
        }
    parameters = estimate(levels, name_levels, random_levels, previous, settings, len(live))
    report.parameters = parameters
    scored = score(levels, pairs, parameters, frequencies, settings, uids)
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


def latest_parameters(connection: Connection) -> tuple[int, datetime, model.Parameters] | None:
    """The parameters of the newest finished run: (run id, finished at, parameters)."""
    row = connection.execute(
        select(_runs.c.id, _runs.c.finished_at, _runs.c.parameters)
        .where(_runs.c.status == "finished", _runs.c.parameters != "")
        .order_by(_runs.c.id.desc())
        .limit(1)
    ).first()
    parameters = model.Parameters.from_json(row.parameters) if row is not None else None
    if row is None or parameters is None:
        return None
    return row.id, row.finished_at, parameters
