"""The review's settings (the ``review:`` section of the configuration): the merge message an
approval sends, its header, and the automatic band (off unless an operator sets one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.merge_targets.settings import MergeTargetSettings
from engine.settings import Issue, setting

SOURCE = "review"
"""The built-in source of merge messages: routes with ``source: review`` carry approvals."""


@dataclass(frozen=True, kw_only=True)
class ReviewSettings:
    """What ``crosswalk review approve`` sends, and whether anything is approved unattended."""

    merge_message: Literal["A40", "A47", "O01"] = setting(
        "The message an approval sends: `A40` (merge patient: the orphan's id into the MPI"
        " patient), `A47` (change the patient identifier list: the orphan's id becomes the"
        " MRN) or `O01` (an order update, ORM^O01 with ORC-1 XO: the study, by accession number"
        " and Study Instance UID, moves to the MPI patient).",
        default="A40",
    )
    version: str = setting("HL7 version of the merge message (MSH-12).", default="2.5.1")
    sending_application: str = setting("MSH-3 of the merge message.", default="CROSSWALK")
    sending_facility: str = setting("MSH-4 of the merge message.", default="")
    receiving_application: str = setting("MSH-5 of the merge message.", default="PACS")
    receiving_facility: str = setting("MSH-6 of the merge message.", default="")
    mrn_authority: str = setting(
        "The assigning authority whose identifier of the MPI patient goes in PID-3; empty: the"
        " patient's identifier of type MR, else its first.",
        default="",
        example="GENHOSP",
    )
    orphan_issuer: str = setting(
        "MRG-1.4 for studies the PACS recorded without an issuer of the patient id.",
        default="",
    )
    auto_approve_band: str = setting(
        "Proposals of this band are approved by `reconcile run` without a reviewer (recorded"
        " as approved by `crosswalk (auto)`). Empty: nothing is merged without a human decision.",
        default="",
        example="strong",
    )
    auto_approve_min_probability: float = setting(
        "… and only those with at least this match probability.", default=0.999
    )
    merge_targets: dict[str, MergeTargetSettings] = setting(
        "Archives an approval changes directly, by name (for a PACS without an HL7 feed): each"
        " approval queues a job per target that moves the study to the MPI patient's identity"
        " (see docs/review.md#merge-targets).",
        default_factory=dict,
    )

    def check(self) -> list[Issue]:
        """Problems with these values."""
        problems: list[Issue] = []
        if self.auto_approve_band not in ("", "strong", "possible"):
            problems.append(
                Issue(
                    f"auto_approve_band {self.auto_approve_band!r} is not a band", "strong or empty"
                )
            )
        if not 0.5 <= self.auto_approve_min_probability <= 1:
            problems.append(Issue("auto_approve_min_probability must be between 0.5 and 1", None))
        if not self.version.replace(".", "").isdigit():
            problems.append(Issue(f"version {self.version!r} is not an HL7 version", "e.g. 2.5.1"))
        for key in ("sending_application", "receiving_application"):
            if not getattr(self, key):
                problems.append(Issue(f"{key} must not be empty", None))
        return problems
