"""The Fellegi–Sunter model: m and u probabilities per comparison level, estimated from the
data (u from random pairs, m by expectation maximisation over the candidate pairs), turned into
match weights, term-frequency adjusted, and into match probabilities."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.reconcile.comparisons import COMPARISONS

FLOOR = 1e-9
"""No probability is estimated below this: a level never seen is rare, not impossible."""
MAX_LOG2_ODDS = 60.0
EM_TOLERANCE = 1e-4
M_FLOOR_SHARE = 0.1
"""EM never learns a level's m below this share of its starting m: a synthetic or clean
training set in which true matches never disagree on an address (no patient moved) would
otherwise drive that level's m to nothing, and a patient who did move would be all but ruled
out by one field (about -30 bits where the start says -3)."""
"""EM stops when no probability moves by more than this in an iteration."""
PRIOR_PAIRS = 1000.0
"""How many random pairs the prior u values count for."""


@dataclass
class Parameters:
    """What the model learnt: per comparison, m and u of each level by level code (the level's
    position in ``Comparison.levels``; 0, null, unused). Saved as JSON in ``reconcile_runs``
    and exported by ``reconcile params --format json`` in this form."""

    match_rate: float
    """π: the share of orphaned studies whose patient is in the MPI (estimated)."""
    patients: int
    """Live MPI patients: the prior odds of one pair are π spread over them."""
    m: dict[str, list[float]]
    u: dict[str, list[float]]
    candidate_pairs: int = 0
    random_pairs: int = 0
    em_iterations: int = 0
    em_converged: bool = False
    estimated_m: bool = False
    """False when m was carried over (too few pairs to estimate it)."""
    keys_version: int = 0
    """The version of the blocking keys the run left in ``patient_keys``."""
    learning: dict[str, Any] | None = None
    """What reviewers' decisions changed (``learning.Learnt`` as a dict); None when the run
    did not learn (learning off)."""

    def to_json(self) -> str:
        """JSON as saved in ``reconcile_runs``; without learning, the form earlier versions
        saved (no ``learning`` key), so saved parameters round-trip unchanged."""
        saved = asdict(self)
        if saved.get("learning") is None:
            saved.pop("learning", None)
        return json.dumps(saved)

    @classmethod
    def from_json(cls, text: str) -> Parameters | None:
        """The parameters saved by a run; None for a form this version does not know. A
        comparison added since the run starts from its starting m and prior u."""
        try:
            parameters = cls(**json.loads(text))
        except (TypeError, ValueError):
            return None
        for comparison in COMPARISONS:
            if comparison.name not in parameters.m and comparison.name not in parameters.u:
                parameters.m[comparison.name] = comparison.starting_m
                parameters.u[comparison.name] = comparison.prior_u
        known = all(len(parameters.m.get(c.name, ())) == len(c.levels) for c in COMPARISONS)
        return parameters if known else None

    def weights(self) -> list[np.ndarray]:
        """log2(m/u) per comparison and level (0 for null)."""
        out = []
        for comparison in COMPARISONS:
            m = np.asarray(self.m[comparison.name])
            u = np.asarray(self.u[comparison.name])
            weight = np.log2(np.maximum(m, FLOOR) / np.maximum(u, FLOOR))
            weight[0] = 0.0
            out.append(weight)
        return out


def starting_m() -> dict[str, list[float]]:
    """Each comparison's levels' starting m, by level code (0 for null)."""
    return {c.name: c.starting_m for c in COMPARISONS}


def _normalised(counts: np.ndarray) -> list[float]:
    counts = counts.astype(float)
    counts[0] = 0.0
    total = counts[1:].sum()
    if total <= 0:
        return [0.0] + [1.0 / (len(counts) - 1)] * (len(counts) - 1)
    values = np.maximum(counts / total, FLOOR)
    values[0] = 0.0
    return (values / values[1:].sum()).tolist()


def estimate_u(levels: np.ndarray, weight: float = PRIOR_PAIRS) -> dict[str, list[float]]:
    """u: how often each level occurs among random (almost always non-matching) pairs,
    smoothed towards each comparison's prior u as if ``weight`` pairs had been drawn from it:
    a small MPI's few random pairs say little, a million say nearly everything."""
    u = {}
    for column, comparison in enumerate(COMPARISONS):
        counts = np.bincount(levels[:, column], minlength=len(comparison.levels)).astype(float)
        counts[0] = 0.0
        counts[1:] += weight * np.asarray(comparison.prior_u[1:])
        u[comparison.name] = _normalised(counts)
    return u


def pattern_codes(levels: np.ndarray) -> np.ndarray:
    """One integer per row of the level matrix (pairs × comparisons): equal for equal rows."""
    radix = np.array([len(c.levels) for c in COMPARISONS], dtype=np.int64)
    places = np.cumprod(np.concatenate(([1], radix[:-1])))
    return np.asarray(levels.astype(np.int64) @ places)


def _patterns(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of the level matrix and how often each occurs."""
    _, first, counts = np.unique(pattern_codes(levels), return_index=True, return_counts=True)
    return levels[first], counts.astype(float)


def _likelihoods(patterns: np.ndarray, table: dict[str, list[float]]) -> np.ndarray:
    result = np.ones(len(patterns))
    for column, comparison in enumerate(COMPARISONS):
        values = np.array(table[comparison.name])
        values[0] = 1.0  # null: no evidence either way
        result *= values[patterns[:, column]]
    return result


def _em(
    levels: np.ndarray,
    u: dict[str, list[float]],
    m: dict[str, list[float]],
    lam: float,
    iterations: int,
) -> tuple[dict[str, list[float]], float, int, bool]:
    patterns, counts = _patterns(levels)
    floors = {k: np.asarray(v) * M_FLOOR_SHARE for k, v in m.items()}
    m = {k: list(v) for k, v in m.items()}
    for iteration in range(1, iterations + 1):
        match = lam * _likelihoods(patterns, m)
        other = (1 - lam) * _likelihoods(patterns, u)
        share = match / np.maximum(match + other, 1e-300)
        weighted = share * counts
        new_lam = float(np.clip(weighted.sum() / counts.sum(), 1e-9, 1 - 1e-9))
        change = abs(new_lam - lam)
        lam = new_lam
        for column, comparison in enumerate(COMPARISONS):
            level_counts = np.bincount(
                patterns[:, column], weights=weighted, minlength=len(comparison.levels)
            )
            values = _floored(_normalised(level_counts), floors[comparison.name])
            change = max(
                change, max(abs(a - b) for a, b in zip(values, m[comparison.name], strict=True))
            )
            m[comparison.name] = values
        if change < EM_TOLERANCE:
            return m, lam, iteration, True
    return m, lam, iterations, False


def _floored(values: list[float], floor: np.ndarray) -> list[float]:
    """``values`` (a distribution over levels, null first) with none of the non-null levels
    below ``floor``, renormalised."""
    raised = np.asarray(values, dtype=float)
    raised[1:] = np.maximum(raised[1:], floor[1:])
    return _normalised(raised)


def estimate_m(
    sessions: list[tuple[np.ndarray, tuple[str, ...]]],
    u: dict[str, list[float]],
    start: dict[str, list[float]],
    iterations: int,
    min_pairs: int = 100,
) -> tuple[dict[str, list[float]], int, bool]:
    """m by EM with u held fixed, in sessions: each a set of pairs chosen for agreeing on some
    fields, whose m it does not learn (those pairs' non-matches agree there far more often
    than random pairs, and one EM over them would take every agreement for a match). A
    comparison's m is the mean over the sessions that learnt it: (m, iterations, converged)."""
    names = [c.name for c in COMPARISONS]
    learnt: dict[str, list[list[float]]] = {name: [] for name in names}
    ran, converged = 0, True
    for levels, blocked in sessions:
        if len(levels) < min_pairs:
            continue
        rows = levels.copy()
        for name in blocked:
            rows[:, names.index(name)] = 0
        m, _lam, count, done = _em(rows, u, start, 0.5, iterations)
        ran, converged = ran + count, converged and done
        for name in names:
            if name not in blocked:
                learnt[name].append(m[name])
    m = {
        name: (np.mean(learnt[name], axis=0).tolist() if learnt[name] else list(start[name]))
        for name in names
    }
    return m, ran, converged


def estimate_match_rate(
    study_rows: np.ndarray, bayes_log2: np.ndarray, studies: int, patients: int, start: float
) -> float:
    """π, the share of orphaned studies whose patient is in the MPI, by EM at study level: a
    study either belongs to one of its candidates or to nobody in the MPI."""
    rate = start
    for _ in range(50):
        probabilities = exclusive_probabilities(
            study_rows, bayes_log2 + prior_log2_odds(rate, patients), studies, rate
        )
        matched = np.bincount(study_rows, weights=probabilities, minlength=studies)
        new = float(np.clip(matched.mean() if studies else start, 0.01, 0.999))
        if abs(new - rate) < 1e-5:
            return new
        rate = new
    return rate


def prior_log2_odds(match_rate: float, patients: int) -> float:
    """The prior odds that a study and a given MPI patient match: π spread over the MPI."""
    prior = match_rate / max(patients, 1)
    return float(np.log2(prior / (1 - prior)))


def term_frequencies(values: dict[str, int]) -> dict[str, float]:
    """Each value's share of all values (its chance to be drawn at random)."""
    total = sum(values.values()) or 1
    return {value: count / total for value, count in values.items()}


def match_weights(
    levels: np.ndarray,
    parameters: Parameters,
    adjustments: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Per pair and comparison, the weight (log2 Bayes factor) of its level, plus a
    term-frequency adjustment where given (comparison name → per-pair log2 u/tf)."""
    weights = parameters.weights()
    out = np.zeros(levels.shape, dtype=float)
    for column, comparison in enumerate(COMPARISONS):
        out[:, column] = weights[column][levels[:, column]]
        if adjustments and comparison.name in adjustments:
            out[:, column] += adjustments[comparison.name]
    return out


def exclusive_probabilities(
    study_rows: np.ndarray, log2_odds: np.ndarray, studies: int, match_rate: float
) -> np.ndarray:
    """The probability that each candidate is *the* patient of its study, given that a study
    has at most one: odds_i / ((1 - π) + Σ odds of the study's candidates), ``log2_odds``
    including the prior π / patients. The study's patient is not in the MPI with prior 1 - π
    (and every pair then random); candidate i is it with prior π / patients times its Bayes
    factor. Two near-identical candidates (twins) share the probability instead of both
    looking certain."""
    clipped = np.clip(log2_odds, -MAX_LOG2_ODDS, MAX_LOG2_ODDS)
    odds = np.exp2(clipped)
    total = np.bincount(study_rows, weights=odds, minlength=studies)
    return odds / ((1.0 - match_rate) + total[study_rows])
