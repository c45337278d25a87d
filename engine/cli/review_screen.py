"""The review screen: a proposal's study and candidate side by side, the evidence as a waterfall,
the other candidates, the patient's history, and what became of the decision.

Shared by ``review show`` and the interactive ``review next``. Plain rich tables: they read in
any terminal, over SSH too, and degrade to text without colour.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from engine.cli.common import local_time, shown_date
from engine.mpi.queries import PatientView
from engine.reconcile.settings import ReconcilerSettings
from engine.review.worklist import ReviewItem, ReviewRow
from engine.studies.flags import Flag, Recorded, study_flags

SAME, DIFFERENT, MISSING = "green", "bold yellow", "dim"

# (label, attribute of Person, evidence field); None: no Person attribute (built specially).
_FIELDS: tuple[tuple[str, str | None, str], ...] = (
    ("patient id", None, "identifier"),
    ("family name", "family_name", "family_name"),
    ("given name", "given_name", "given_name"),
    ("middle name", "middle_name", ""),
    ("birth date", "birth_date", "birth_date"),
    ("sex", "sex", "sex"),
    ("address", None, "address"),
    ("phone", "phone", "phone"),
    ("accession", None, "accession"),
)


def _address(person: Any) -> str:
    return ", ".join(p for p in (person.street, person.city, person.postal_code) if p)


def _pair(row: ReviewRow, label: str, attribute: str | None) -> tuple[str, str]:
    study, patient = row.study, row.patient
    if attribute is not None:
        left, right = getattr(study.person, attribute), getattr(patient, attribute)
        return (
            (shown_date(left, ""), shown_date(right, ""))
            if attribute == "birth_date"
            else (left, right)
        )
    if label == "patient id":
        return (
            f"{study.patient_id}^^^{study.issuer}" if study.issuer else study.patient_id,
            f"{row.mrn}^^^{row.authority}",
        )
    if label == "address":
        return _address(study.person), _address(patient)
    return study.accession, ""


def _styled(value: str, other: str) -> Text:
    if not value:
        return Text("—", style=MISSING)
    if not other:
        return Text(value)
    return Text(value, style=SAME if value.upper() == other.upper() else DIFFERENT)


def side_by_side(row: ReviewRow) -> Table:
    """Each field as the PACS recorded it and as the MPI has it, with the evidence it gave."""
    table = Table(title="study (PACS) and candidate (MPI)", title_justify="left")
    table.add_column("field")
    table.add_column("study (PACS)")
    table.add_column("patient (MPI)")
    table.add_column("comparison")
    table.add_column("weight", justify="right")
    evidence = {e["field"]: e for e in row.evidence}
    for label, attribute, evidence_field in _FIELDS:
        left, right = _pair(row, label, attribute)
        found = evidence.get(evidence_field)
        level = found["level"] if found else ""
        weight = f"{found['weight']:+.2f}" if found and found["weight"] else ""
        if not left and not right and not weight:
            continue
        table.add_row(label, _styled(left, right), _styled(right, left), level, weight)
    return table


def _probability(log2_odds: float) -> float:
    if log2_odds > 60:
        return 1.0
    odds = math.pow(2.0, log2_odds)
    return odds / (1 + odds)


def waterfall(row: ReviewRow) -> Table:
    """How the probability was reached: the prior, then each field's weight, summed."""
    table = Table(title="how the probability was reached", title_justify="left")
    table.add_column("evidence")
    table.add_column("weight (bits)", justify="right")
    table.add_column("running total", justify="right")
    table.add_column("probability", justify="right")
    total = 0.0
    for item in row.evidence:
        weight = float(item["weight"])
        if not weight and item["field"] != "prior":
            continue
        total += weight
        label = item["field"] + (f" ({item['level']})" if item["level"] else "")
        style = "green" if weight > 0 else ("red" if weight < 0 else "")
        table.add_row(
            label,
            Text(f"{weight:+.2f}", style=style),
            f"{total:+.2f}",
            f"{_probability(total):.6f}",
        )
    table.add_row(
        Text("with the study's other candidates", style="bold"),
        "",
        "",
        Text(f"{row.probability:.6f}", style="bold"),
    )
    return table


def flags_of(row: ReviewRow, settings: ReconcilerSettings | None = None) -> tuple[Flag, ...]:
    """The implausible values of the proposal's study, as the PACS recorded them."""
    person = row.study.person
    recorded = Recorded(
        person.family_name, person.given_name, person.birth_date, person.sex, row.study.study_date
    )
    return study_flags(recorded, settings)


def study_context(row: ReviewRow, flags: tuple[Flag, ...] = ()) -> Table:
    table = Table.grid(padding=(0, 2))
    study = row.study
    for label, value in (
        ("study", row.study_uid),
        ("date", shown_date(study.study_date, "")),
        ("modality", study.modality),
        ("accession", study.accession),
        ("description", study.description),
        ("from", study.source),
    ):
        table.add_row(Text(label, style="bold"), value or "—")
    for flag in flags:
        table.add_row(Text("flag", style=DIFFERENT), Text(str(flag), style=DIFFERENT))
    if not study.known:
        table.add_row(Text("note", style="bold red"), "no longer in the study index")
    return table


def others(item: ReviewItem) -> Table | None:
    if not item.others:
        return None
    table = Table(title="other candidates for this study", title_justify="left")
    for column in ("proposal", "MRN", "name", "born", "probability", "band", "status"):
        table.add_column(column)
    for other in item.others:
        person = other.patient
        table.add_row(
            str(other.proposal_id),
            other.mrn,
            person.name,
            shown_date(person.birth_date, ""),
            f"{other.probability:.4f}",
            other.band,
            other.status,
        )
    return table


def history(view: PatientView | None) -> Table | None:
    """The candidate's identifiers, other names, merges and identifier changes."""
    if view is None:
        return None
    table = Table(title="the patient's history", title_justify="left")
    table.add_column("what")
    table.add_column("detail")
    for identifier in view.identifiers:
        moved = f" (from patient {identifier.merged_from})" if identifier.merged_from else ""
        table.add_row(
            "identifier",
            f"{identifier.value}^^^{identifier.authority} {identifier.type_code}{moved}",
        )
    for name in view.names:
        table.add_row(f"{name.kind} name", f"{name.family_name}^{name.given_name}")
    for merged in view.merged_in:
        table.add_row(
            "merged in", f"patient {merged.id} ({merged.family_name}^{merged.given_name})"
        )
    for event in view.events:
        if event.kind in ("created", "updated", "stale", "order", "imported"):
            continue
        table.add_row(event.kind, f"{event.event_time} {event.detail}".strip())
    return table if table.row_count else None


def decisions(item: ReviewItem) -> Table | None:
    if not item.decisions and not item.deliveries:
        return None
    table = Table(title="decisions and the merge", title_justify="left")
    table.add_column("when")
    table.add_column("what")
    table.add_column("by")
    table.add_column("detail")
    for decision in item.decisions:
        detail = decision.reason
        if decision.control_id:
            detail = f"merge message {decision.control_id}" + (f"; {detail}" if detail else "")
        table.add_row(local_time(decision.decided_at), decision.action, decision.reviewer, detail)
    for delivery in item.deliveries:
        when = local_time(delivery.updated_at) if delivery.updated_at else ""
        detail = f"{delivery.attempts} attempt(s)" + (
            f"; {delivery.last_error}" if delivery.last_error else ""
        )
        table.add_row(when, f"to {delivery.destination}: {delivery.state}", "", detail)
    return table


def headline(row: ReviewRow) -> Text:
    colour = {"strong": "bold green", "possible": "bold yellow"}.get(row.band, "")
    text = Text(f"proposal {row.proposal_id}  ", style="bold")
    text.append(row.band, style=colour)
    text.append(
        f"  p={row.probability:.4f}  rank {row.rank}  {row.status}"
        f"  weight {row.match_weight:+.1f} bits"
    )
    if row.delivery:
        text.append(f"  merge: {row.delivery}")
    return text


def screen(
    item: ReviewItem, patient: PatientView | None, settings: ReconcilerSettings | None = None
) -> RenderableType:
    """Everything a reviewer needs to decide one proposal (``settings``: the reconciler's, for
    the study's flags)."""
    parts: list[RenderableType] = [
        headline(item.row),
        study_context(item.row, flags_of(item.row, settings)),
        side_by_side(item.row),
        waterfall(item.row),
    ]
    parts.extend(p for p in (others(item), history(patient), decisions(item)) if p is not None)
    return Group(*parts)


def print_screen(
    console: Console,
    item: ReviewItem,
    patient: PatientView | None,
    settings: ReconcilerSettings | None = None,
) -> None:
    console.print(screen(item, patient, settings))
