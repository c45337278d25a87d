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
from engine.cli.tables import TEXT, WORDS, Column, Fitted, fit
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


def side_by_side(row: ReviewRow, console: Console) -> Fitted:
    """Each field as the PACS recorded it and as the MPI has it, with the evidence it gave."""
    evidence = {e["field"]: e for e in row.evidence}
    rows = []
    for label, attribute, evidence_field in _FIELDS:
        left, right = _pair(row, label, attribute)
        found = evidence.get(evidence_field)
        level = found["level"] if found else ""
        weight = f"{found['weight']:+.2f}" if found and found["weight"] else ""
        if not left and not right and not weight:
            continue
        rows.append((label, _styled(left, right), _styled(right, left), level, weight))
    return fit(
        console, _SIDE_COLUMNS, rows, title="study (PACS) and candidate (MPI)", title_justify="left"
    )


_SIDE_COLUMNS = (
    Column("field", WORDS),
    Column("study (PACS)", WORDS),
    Column("patient (MPI)", WORDS),
    Column("comparison", drop=1),
    Column("weight", justify="right"),
)


def _probability(log2_odds: float) -> float:
    if log2_odds > 60:
        return 1.0
    odds = math.pow(2.0, log2_odds)
    return odds / (1 + odds)


def shown_probability(probability: float, digits: int = 4) -> str:
    """A probability to ``digits`` decimals, never rounded to a certainty it is not:
    ``> 0.9999`` for 0.999997, ``< 0.0001`` for 0.00002.

    >>> shown_probability(0.999997), shown_probability(0.98213), shown_probability(1.0)
    ('> 0.9999', '0.9821', '1.0000')
    """
    text = f"{probability:.{digits}f}"
    step = 10.0**-digits
    if probability < 1 and float(text) >= 1:
        return f"> {1 - step:.{digits}f}"
    if probability > 0 and float(text) <= 0:
        return f"< {step:.{digits}f}"
    return text


def total_weight(row: ReviewRow) -> float:
    """The prior and every field's weight, summed: the waterfall's last running total."""
    return sum(float(item["weight"]) for item in row.evidence)


def waterfall(row: ReviewRow, console: Console) -> Fitted:
    """How the probability was reached: the prior, then each field's weight, summed."""
    rows: list[tuple[str | Text, ...]] = []
    total = 0.0
    for item in row.evidence:
        weight = float(item["weight"])
        if not weight and item["field"] != "prior":
            continue
        total += weight
        label = item["field"] + (f" ({item['level']})" if item["level"] else "")
        style = "green" if weight > 0 else ("red" if weight < 0 else "")
        rows.append(
            (
                label,
                Text(f"{weight:+.2f}", style=style),
                f"{total:+.2f}",
                shown_probability(_probability(total), 6),
            )
        )
    rows.append(
        (
            Text("with the study's other candidates", style="bold"),
            "",
            "",
            Text(shown_probability(row.probability, 6), style="bold"),
        )
    )
    return fit(
        console,
        _WATERFALL_COLUMNS,
        rows,
        title="how the probability was reached",
        title_justify="left",
    )


_WATERFALL_COLUMNS = (
    Column("evidence", WORDS),
    Column("weight (bits)", justify="right"),
    Column("running total", justify="right", drop=1),
    Column("probability", justify="right"),
)


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


def others(item: ReviewItem, console: Console) -> Fitted | None:
    if not item.others:
        return None
    rows = [
        (
            str(other.proposal_id),
            other.mrn,
            other.patient.name,
            shown_date(other.patient.birth_date, ""),
            shown_probability(other.probability),
            other.band,
            other.status,
        )
        for other in item.others
    ]
    return fit(
        console, _OTHER_COLUMNS, rows, title="other candidates for this study", title_justify="left"
    )


_OTHER_COLUMNS = (
    Column("proposal"),
    Column("MRN"),
    Column("name", WORDS),
    Column("born"),
    Column("probability"),
    Column("band", drop=2),
    Column("status", drop=1),
)


def history(view: PatientView | None, console: Console) -> Fitted | None:
    """The candidate's identifiers, other names, merges and identifier changes."""
    if view is None:
        return None
    rows: list[tuple[str, str]] = []
    for identifier in view.identifiers:
        moved = f" (from patient {identifier.merged_from})" if identifier.merged_from else ""
        rows.append(
            (
                "identifier",
                f"{identifier.shown_value}^^^{identifier.authority} {identifier.type_code}{moved}",
            )
        )
    for name in view.names:
        rows.append((f"{name.kind} name", f"{name.family_name}^{name.given_name}"))
    for merged in view.merged_in:
        rows.append(
            ("merged in", f"patient {merged.id} ({merged.family_name}^{merged.given_name})")
        )
    for event in view.events:
        if event.kind in ("created", "updated", "stale", "order", "imported"):
            continue
        rows.append((event.kind, f"{event.event_time} {event.detail}".strip()))
    if not rows:
        return None
    columns = (Column("what", WORDS), Column("detail", WORDS))
    return fit(console, columns, rows, title="the patient's history", title_justify="left")


def decisions(item: ReviewItem, console: Console) -> Fitted | None:
    if not item.decisions and not item.deliveries:
        return None
    rows: list[tuple[str, str, str, str]] = []
    for decision in item.decisions:
        detail = decision.reason
        if decision.control_id:
            detail = f"merge message {decision.control_id}" + (f"; {detail}" if detail else "")
        rows.append((local_time(decision.decided_at), decision.action, decision.reviewer, detail))
    for delivery in item.deliveries:
        when = local_time(delivery.updated_at) if delivery.updated_at else ""
        detail = f"{delivery.attempts} attempt(s)" + (
            f"; {delivery.last_error}" if delivery.last_error else ""
        )
        rows.append((when, f"to {delivery.destination}: {delivery.state}", "", detail))
    return fit(
        console, _DECISION_COLUMNS, rows, title="decisions and the merge", title_justify="left"
    )


_DECISION_COLUMNS = (
    Column("when", WORDS),
    Column("what", WORDS),
    Column("by", WORDS),
    Column("detail", TEXT),
)


def headline(row: ReviewRow) -> Text:
    """The proposal in one line; its weight is the waterfall's total, the prior included."""
    colour = {"strong": "bold green", "possible": "bold yellow"}.get(row.band, "")
    text = Text(f"proposal {row.proposal_id}  ", style="bold")
    text.append(row.band, style=colour)
    probability = shown_probability(row.probability)
    text.append(
        f"  p{' ' if probability[0] in '<>' else '='}{probability}  rank {row.rank}  {row.status}"
        f"  weight {total_weight(row):+.2f} bits"
    )
    if row.delivery:
        text.append(f"  merge: {row.delivery}")
    return text


def screen(
    item: ReviewItem,
    patient: PatientView | None,
    settings: ReconcilerSettings | None = None,
    console: Console | None = None,
) -> RenderableType:
    """Everything a reviewer needs to decide one proposal (``settings``: the reconciler's, for
    the study's flags), its tables fitted to ``console``'s width."""
    width = console or Console()
    tables = [
        side_by_side(item.row, width),
        waterfall(item.row, width),
        *(
            found
            for found in (others(item, width), history(patient, width), decisions(item, width))
            if found is not None
        ),
    ]
    parts: list[RenderableType] = [
        headline(item.row),
        study_context(item.row, flags_of(item.row, settings)),
        *(fitted.table for fitted in tables),
    ]
    dropped = sorted({header for fitted in tables for header in fitted.dropped})
    if dropped:
        parts.append(Text(f"(left out to fit the terminal: {', '.join(dropped)})", style="dim"))
    return Group(*parts)


def print_screen(
    console: Console,
    item: ReviewItem,
    patient: PatientView | None,
    settings: ReconcilerSettings | None = None,
) -> None:
    console.print(screen(item, patient, settings, console))
