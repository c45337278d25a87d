"""The reconciler's settings (the ``reconciler:`` section of the configuration): bands,
placeholder values that never count as evidence, and the limits of blocking and estimation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.settings import Issue, setting
from engine.studies.placeholders import (
    PLACEHOLDER_DATES,
    PLACEHOLDER_IDS,
    PLACEHOLDER_NAMES,
    glob_patterns,
)


@dataclass(frozen=True, kw_only=True)
class ReconcilerSettings:
    """How ``crosswalk reconcile run`` scores orphaned studies and which proposals it keeps."""

    strong: float = setting(
        "Match probability at or above which a proposal is in the `strong` band.", default=0.99
    )
    possible: float = setting(
        "Match probability at or above which a candidate is proposed at all (band `possible`);"
        " below it nothing is written.",
        default=0.5,
    )
    strong_needs_given_name: bool = setting(
        "A candidate whose given name plainly differs (not similar, a nickname, an initial or"
        " swapped) is never `strong`, whatever else agrees: that is what twins and siblings look"
        " like.",
        default=True,
    )
    strong_on_names_alone: float = setting(
        "Match probability a candidate needs for `strong` when only names, birth date and sex"
        " agree (no identifier, address, phone, full middle name or order does): namesakes"
        " look like that in a large MPI (WILLIAM for a BILLY born the same day), so the"
        " probability must be this high (or `strong`, if higher) and the given name no"
        " nickname.",
        default=0.999,
    )
    max_candidates: int = setting("Most proposals kept per study (its best candidates).", default=3)
    max_block_size: int = setting(
        "A blocking key shared by more MPI patients than this yields no candidates (it would"
        " only add noise and time; the other keys still apply).",
        default=1000,
    )
    placeholder_names: list[str] = setting(
        "Family or given names that are placeholders, never evidence (glob patterns, any"
        " case). A placeholder family name makes the given name a placeholder too (DOE^JOHN).",
        default_factory=lambda: list(PLACEHOLDER_NAMES),
    )
    placeholder_birth_dates: list[str] = setting(
        "Birth dates (YYYYMMDD) registration desks use when the real one is unknown.",
        default_factory=lambda: list(PLACEHOLDER_DATES),
    )
    placeholder_ids: list[str] = setting(
        "Patient ids that are placeholders or temporary (glob patterns).",
        default_factory=lambda: list(PLACEHOLDER_IDS),
    )
    random_pairs: int = setting(
        "Random (study, patient) pairs drawn to estimate how often non-matches agree (u).",
        default=300_000,
    )
    em_iterations: int = setting(
        "Most iterations of each EM estimation of the m probabilities.", default=100
    )
    min_em_pairs: int = setting(
        "Fewer candidate pairs than this: m is not re-estimated; the last run's values (else the"
        " built-in starting values) are used.",
        default=2000,
    )
    term_frequencies: bool = setting(
        "Weigh exact name agreement by how rare the name is in the MPI (SMITH counts less).",
        default=True,
    )
    seed: int = setting("Seed of the random pair sample (runs are reproducible).", default=1)
    learning: bool = setting(
        "Learn from reviewers' decisions: approved pairs refine the m probabilities, the"
        " patterns reviewers decided move (rejections lower them) and a rejection in the strong"
        " band raises its threshold (see docs/reconciler.md, learning from reviewers).",
        default=True,
    )
    learning_prior_weight: float = setting(
        "How many decisions the model estimated from the data counts for against reviewers'"
        " decisions: n decisions of one pattern move its probability by at most n / (this + n),"
        " so a handful cannot swing the model.",
        default=100.0,
    )
    _names: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _ids: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", glob_patterns(self.placeholder_names))
        object.__setattr__(self, "_ids", glob_patterns(self.placeholder_ids))

    def check(self) -> list[Issue]:
        """Problems with these values."""
        problems: list[Issue] = []
        if not 0 < self.possible <= self.strong < 1:
            problems.append(Issue("thresholds must satisfy 0 < possible <= strong < 1", None))
        if not 0 < self.strong_on_names_alone < 1:
            problems.append(Issue("strong_on_names_alone must be between 0 and 1", "0.999"))
        if self.max_candidates < 1 or self.max_block_size < 1:
            problems.append(Issue("max_candidates and max_block_size must be at least 1", None))
        if self.random_pairs < 1000:
            problems.append(Issue("random_pairs must be at least 1000", "the default is 300000"))
        if self.learning_prior_weight < 1:
            problems.append(Issue("learning_prior_weight must be at least 1", "the default is 100"))
        if any(len(d) != 8 or not d.isdigit() for d in self.placeholder_birth_dates):
            problems.append(Issue("placeholder_birth_dates must be YYYYMMDD", "e.g. 19000101"))
        return problems

    def placeholder_name(self, name: str) -> bool:
        return bool(name) and self._names.fullmatch(name.upper()) is not None

    def placeholder_id(self, value: str) -> bool:
        return not value or self._ids.fullmatch(value.upper()) is not None

    def band(self, probability: float, given_differs: bool = False, names_alone: str = "") -> str:
        """``strong`` or ``possible``. ``names_alone``: the given name's level when only
        names, birth date and sex agree ('' when something else does too)."""
        if given_differs and self.strong_needs_given_name:
            return "possible"
        if names_alone:
            alone = max(self.strong, self.strong_on_names_alone)
            strong = names_alone != "nickname" and probability >= alone
            return "strong" if strong else "possible"
        return "strong" if probability >= self.strong else "possible"
