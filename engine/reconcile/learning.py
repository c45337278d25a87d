"""Learning from reviewers: each approved proposal is a labelled match, each rejected one a
labelled non-match. A run refines the model with them, as a Bayesian update whose prior is the
model estimated from the data, counted as ``learning_prior_weight`` decisions:

- **m**: each level's m becomes (W·m + a) / (W + the approvals' a of the field's levels), where
  an approved pair adds to its level's a what the model doubted of it, 1 − p (EM already
  counted the rest as a match: confirming a certain proposal teaches nothing new); u is left to
  the random pairs.
- **Patterns** (one level in every comparison): a pair whose pattern reviewers decided gets
  (W·p + approved of the pattern) / (W + decided of the pattern) instead of its probability p:
  rejections of a pattern lower it, approvals raise it, and n decisions move it by at most
  n / (W + n).
- **The strong threshold** catches what the patterns do not: it rises by what the decided pairs
  still strong after their patterns moved (in the strong band when decided, and at or above
  the threshold after) fell short of those probabilities, (Σ p − approvals) / (W + decided),
  at most to 1 − (1 − strong) / 10; it is never lowered. A rejected pattern that its own
  rejections took out of the band raises nothing: raising the threshold for it would only
  move right proposals of other patterns out of the band.

Decided pairs are read as they were scored (the levels kept in the proposal's evidence), so a
study changed by the merge it was approved for is not compared again. Approvals an automatic
band made are the model's own decisions, not reviewers', and are left out."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from engine.reconcile.comparisons import COMPARISONS
from engine.reconcile.estimation import Parameters, pattern_codes
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.store.schema import table_of

_proposals = table_of(Proposal)

REVIEWERS = "reviewers"
"""The evidence item that says how reviewers' decisions of the pattern moved a probability."""
STRONG_CEILING = 10.0
"""The strong threshold rises at most to 1 - (1 - strong) / this (0.99 -> 0.999)."""
_LOGIT_CLIP = 1e-15

MachineDecided = Callable[[Connection], set[int]]
"""The proposals an automatic band approved (by id): left out of learning. The review, which
records who decided, provides it (``engine.review.upkeep.automatic_approvals``)."""


def log2_odds(probability: np.ndarray | float) -> np.ndarray:
    """log2(p / (1 - p)), with p kept off 0 and 1 (a stored 1.0 is 'certain to 15 digits')."""
    p = np.clip(np.asarray(probability, dtype=float), _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    return np.asarray(np.log2(p / (1 - p)))


@dataclass(slots=True)
class Labelled:
    """Decided pairs as they were scored: levels (pairs × comparisons), whether a reviewer
    approved each, and the model's probability before any learning adjusted it."""

    levels: np.ndarray
    approved: np.ndarray
    probability: np.ndarray
    strong: np.ndarray
    """Whether each was in the strong band when decided."""
    left_out: int = 0
    """Decided pairs not learnt from: approved automatically, or evidence not readable."""

    def __len__(self) -> int:
        return len(self.approved)


def _levels_of(evidence: str) -> tuple[list[int], float] | None:
    """Level codes by comparison from a proposal's evidence (a level no longer known, or a
    comparison added since, is null), and the bits learning added then; None if unreadable."""
    try:
        items = json.loads(evidence)
        named = {item["field"]: item for item in items}
    except (TypeError, ValueError, KeyError):
        return None
    codes = []
    for comparison in COMPARISONS:
        level = named.get(comparison.name, {}).get("level")
        codes.append(comparison.names.index(level) if level in comparison.names else 0)
    if not any(codes):
        return None
    try:
        learnt = float(named.get(REVIEWERS, {}).get("weight", 0.0))
    except (TypeError, ValueError):
        return None
    return codes, learnt


def labelled_pairs(connection: Connection, machine_decided: MachineDecided | None) -> Labelled:
    """Every approved and rejected proposal a reviewer decided, as it was scored."""
    automatic = machine_decided(connection) if machine_decided is not None else set()
    query = select(
        _proposals.c.id,
        _proposals.c.status,
        _proposals.c.probability,
        _proposals.c.band,
        _proposals.c.evidence,
    ).where(_proposals.c.status.in_([ProposalStatus.APPROVED, ProposalStatus.REJECTED]))
    levels: list[list[int]] = []
    approved: list[bool] = []
    model: list[float] = []
    strong: list[bool] = []
    left_out = 0
    for proposal_id, status, probability, band, evidence in connection.execute(query):
        read = _levels_of(evidence) if proposal_id not in automatic else None
        if read is None:
            left_out += 1
            continue
        codes, learnt = read
        levels.append(codes)
        approved.append(status == ProposalStatus.APPROVED)
        strong.append(band == "strong")
        model.append(float(log2_odds(probability)) - learnt)
    return Labelled(
        np.asarray(levels, dtype=np.int8).reshape(-1, len(COMPARISONS)),
        np.asarray(approved, dtype=bool),
        1.0 / (1.0 + np.exp2(-np.asarray(model, dtype=float))),
        np.asarray(strong, dtype=bool),
        left_out,
    )


@dataclass(slots=True)
class Pattern:
    """What reviewers decided of one pattern (a level in every comparison)."""

    levels: dict[str, str]
    """Comparison name → level name; a comparison left out is null (a saved run stays
    small)."""
    decided: int
    approved: int
    model: float
    """The model's mean probability of the decided pairs (before learning)."""

    def adjusted(self, probability: float, prior_weight: float) -> float:
        """A probability of this pattern after its decisions."""
        return float(posterior(probability, self.approved, self.decided, prior_weight))


def posterior(probability: Any, approved: Any, decided: Any, prior_weight: float) -> Any:
    """(W·p + approved) / (W + decided): the model's p counted as W decisions (numbers or
    arrays)."""
    return (prior_weight * probability + approved) / (prior_weight + decided)


@dataclass(slots=True)
class Learnt:
    """What a run learnt from reviewers' decisions (saved with its parameters)."""

    prior_weight: float
    approved: int = 0
    rejected: int = 0
    left_out: int = 0
    m_before: dict[str, list[float]] = field(default_factory=dict)
    """m as estimated from the data, before the approved pairs refined it."""
    strong_before: float = 0.0
    strong_after: float = 0.0
    patterns: list[Pattern] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Learnt | None:
        """What a run saved; None when it learnt nothing or in a form this version does not
        know."""
        if not values:
            return None
        try:
            patterns = [Pattern(**p) for p in values.get("patterns", [])]
            return cls(**{**values, "patterns": patterns})
        except TypeError:
            return None

    def patterns_of(self, levels: np.ndarray) -> np.ndarray:
        """Per pair (a row of levels), the index in ``patterns`` of its decided pattern, or -1
        (a pattern with a level no longer known applies to no pair)."""
        found = np.full(len(levels), -1, dtype=np.int64)
        known = sorted(
            (code, index)
            for index, pattern in enumerate(self.patterns)
            if (code := _code_of(pattern.levels)) is not None
        )
        if not known or not len(levels):
            return found
        codes = np.array([code for code, _ in known], dtype=np.int64)
        indexes = np.array([index for _, index in known], dtype=np.int64)
        pairs = pattern_codes(levels)
        at = np.minimum(np.searchsorted(codes, pairs), len(codes) - 1)
        hit = codes[at] == pairs
        found[hit] = indexes[at[hit]]
        return found

    def adjust(self, which: np.ndarray, probability: np.ndarray) -> np.ndarray:
        """The probabilities after the decisions of each pair's pattern (``which``: from
        :meth:`patterns_of`): (W·p + approved) / (W + decided)."""
        out = probability.copy()
        rows = which >= 0
        if not rows.any():
            return out
        approved = np.array([p.approved for p in self.patterns], dtype=float)[which[rows]]
        decided = np.array([p.decided for p in self.patterns], dtype=float)[which[rows]]
        out[rows] = posterior(probability[rows], approved, decided, self.prior_weight)
        return out

    def evidence(self, which: int, before: float, after: float) -> list[dict[str, Any]]:
        """The evidence item of a pair that reviewers' decisions of its pattern (index
        ``which``, -1 for none) moved from ``before`` to ``after``, in bits as the other
        fields' weights; [] when nothing moved it."""
        if which < 0 or after == before:
            return []
        pattern = self.patterns[which]
        weight = float(log2_odds(after) - log2_odds(before))
        level = f"{pattern.approved} of {pattern.decided} approved"
        return [{"field": REVIEWERS, "level": level, "weight": round(weight, 3)}]


def _code_of(named: dict[str, str]) -> int | None:
    codes = []
    for comparison in COMPARISONS:
        level = named.get(comparison.name, comparison.names[0])
        if level not in comparison.names:
            return None
        codes.append(comparison.names.index(level))
    return int(pattern_codes(np.asarray([codes]))[0])


def estimated_m(previous: Parameters | None) -> dict[str, list[float]] | None:
    """The m the previous run estimated from the data, before learning (what a run carries
    over or starts EM from, so that decisions are never counted twice)."""
    if previous is None:
        return None
    learnt = Learnt.from_dict(previous.learning)
    return learnt.m_before if learnt is not None and learnt.m_before else previous.m


def learn(parameters: Parameters, labelled: Labelled, strong: float, prior_weight: float) -> Learnt:
    """Refine ``parameters.m`` with the approved pairs (by what the model doubted of each); say
    how each decided pattern and the strong threshold move (see the module's docstring)."""
    learnt = Learnt(
        prior_weight,
        approved=int(labelled.approved.sum()),
        rejected=int((~labelled.approved).sum()),
        left_out=labelled.left_out,
        m_before={name: list(values) for name, values in parameters.m.items()},
        strong_before=strong,
        strong_after=strong,
    )
    if not len(labelled):
        return learnt
    matches = labelled.levels[labelled.approved]
    doubted = 1.0 - labelled.probability[labelled.approved]
    for column, comparison in enumerate(COMPARISONS):
        counts = np.bincount(
            matches[:, column], weights=doubted, minlength=len(comparison.levels)
        ).astype(float)
        counts[0] = 0.0
        m = np.asarray(parameters.m[comparison.name], dtype=float)
        updated = (prior_weight * m + counts) / (prior_weight + counts.sum())
        updated[0] = 0.0
        parameters.m[comparison.name] = updated.tolist()
    learnt.patterns = _patterns(labelled)
    after = learnt.adjust(learnt.patterns_of(labelled.levels), labelled.probability)
    in_band = labelled.strong & (after >= strong)
    if in_band.any():
        shortfall = after[in_band].sum() - labelled.approved[in_band].sum()
        raised = strong + max(shortfall, 0.0) / (prior_weight + in_band.sum())
        learnt.strong_after = float(min(raised, 1 - (1 - strong) / STRONG_CEILING))
    return learnt


def _patterns(labelled: Labelled) -> list[Pattern]:
    """The distinct patterns of the decided pairs, with their counts and mean probability."""
    _, first, inverse = np.unique(
        pattern_codes(labelled.levels), return_index=True, return_inverse=True
    )
    decided = np.bincount(inverse)
    approved = np.bincount(inverse, weights=labelled.approved.astype(float))
    total = np.bincount(inverse, weights=labelled.probability)
    return [
        Pattern(
            {
                c.name: c.levels[int(level)].name
                for c, level in zip(COMPARISONS, levels, strict=True)
                if level
            },
            int(decided[index]),
            int(approved[index]),
            float(total[index] / decided[index]),
        )
        for index, levels in enumerate(labelled.levels[first])
    ]
