"""``crosswalk review``: decide merge proposals, send approvals to the PACS, audit, was-is.

These commands show patient data (PHI) on purpose, to the reviewer; the engine's logs never do.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.text import Text
from sqlalchemy import Engine

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.audit.trail import Trail, ref
from engine.audit.trail import criteria as recorded
from engine.cli.auditing import audited, command_trail, record
from engine.cli.common import (
    DbOption,
    console,
    errors,
    fail,
    load_config_or_fail,
    local_time,
    open_store_or_fail,
    parse_when,
    shown_date,
    write_records,
)
from engine.cli.keypress import read_key
from engine.cli.review_screen import headline, print_screen, shown_probability
from engine.cli.tables import TEXT, WORDS, Column, fit
from engine.config.model import EngineConfig
from engine.mpi.queries import view
from engine.reconcile.tables import ProposalStatus
from engine.review.decisions import Decided, ReviewError, approve, defer, reject
from engine.review.tables import Action
from engine.review.upkeep import one_per_study, refresh
from engine.review.was_is import LAYOUTS, approvals, was_is
from engine.review.worklist import (
    DecisionView,
    ReviewFilter,
    ReviewItem,
    ReviewRow,
    decision_views,
    item,
    rows,
)
from engine.routes.router import Router
from engine.studies.settings import parse_study_date

DEFAULT_CONFIG = Path("routes")
app = typer.Typer(
    help="Review merge proposals: list, show, next, approve, reject, defer, audit, export-was-is.",
    no_args_is_help=True,
)
ConfigOption = Annotated[
    Path,
    typer.Option(help="Configuration folder (its `review:` section and the route of merges)."),
]
UserOption = Annotated[
    str | None,
    typer.Option("--user", help="Who decides (recorded in the audit); default: the OS user."),
]
Output = Annotated[Literal["table", "csv", "json"], typer.Option("--format", help="Output format.")]
BandOption = Annotated[
    list[str] | None, typer.Option("--band", help="Only this band (repeatable).")
]
MinProbability = Annotated[
    float | None, typer.Option(help="Only proposals with at least this probability.")
]
MaxProbability = Annotated[
    float | None, typer.Option(help="Only proposals with at most this probability.")
]
ModalityOption = Annotated[
    list[str] | None, typer.Option("--modality", help="Only studies of this modality (repeatable).")
]
StudyFrom = Annotated[str, typer.Option(help="Only studies dated on or after (YYYY-MM-DD).")]
StudyTo = Annotated[str, typer.Option(help="Only studies dated on or before (YYYY-MM-DD).")]


def _config(folder: Path, *, required: bool) -> EngineConfig:
    if not required and folder == DEFAULT_CONFIG and not folder.exists():
        return EngineConfig.default()
    return load_config_or_fail(folder)


def _reviewer(user: str | None) -> str:
    name = (user or "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:
        fail("cannot tell who you are: give --user")


def _open(db: str | None, config: EngineConfig) -> Engine:
    """The store, with open proposals brought up to date (merges followed, resolved closed)."""
    store = open_store_or_fail(db)
    done = refresh(store, config.review.mrn_authority)
    if done.followed or done.closed:
        errors.print(
            f"note: {done.followed} proposal(s) followed a merge of their patient,"
            f" {done.closed} closed (study resolved or gone)"
        )
    return store


def _day(option: str, value: str) -> str:
    if not value:
        return ""
    parsed = parse_study_date(value)
    if parsed is None:
        fail(f"{option} {value!r} is not a date (YYYY-MM-DD)")
    return parsed


def _statuses(values: list[str] | None) -> tuple[str, ...]:
    wanted: list[str] = []
    for value in values or [ProposalStatus.PENDING]:
        if value == "all":
            return ()
        if value == "open":
            wanted.extend(ProposalStatus.OPEN)
            continue
        if value not in ProposalStatus.ALL:
            fail(f"--status {value!r}: one of {', '.join(ProposalStatus.ALL)}, open, all")
        wanted.append(value)
    return tuple(wanted)


def _filter(
    status: list[str] | None,
    band: list[str] | None,
    min_probability: float | None,
    max_probability: float | None,
    modality: list[str] | None,
    study_from: str,
    study_to: str,
    limit: int | None = None,
) -> ReviewFilter:
    return ReviewFilter(
        statuses=_statuses(status),
        bands=tuple(band or ()),
        min_probability=min_probability,
        max_probability=max_probability,
        modalities=tuple(modality or ()),
        study_date_from=_day("--study-from", study_from),
        study_date_to=_day("--study-to", study_to),
        limit=limit,
    )


def _flat(item: ReviewRow) -> dict[str, Any]:
    study, patient = item.study, item.patient
    return {
        "proposal_id": item.proposal_id,
        "status": item.status,
        "band": item.band,
        "probability": round(item.probability, 6),
        "rank": item.rank,
        "study_uid": item.study_uid,
        "study_date": study.study_date,
        "modality": study.modality,
        "accession": study.accession,
        "patient_id": study.patient_id,
        "issuer": study.issuer,
        "study_name": study.person.name,
        "study_birth_date": study.person.birth_date,
        "mrn": item.mrn,
        "authority": item.authority,
        "mpi_patient": item.patient_id,
        "mpi_name": patient.name,
        "mpi_birth_date": patient.birth_date,
        "delivery": item.delivery,
    }


LIST_COLUMNS = (
    "proposal_id",
    "status",
    "band",
    "probability",
    "rank",
    "study_uid",
    "study_date",
    "modality",
    "accession",
    "patient_id",
    "issuer",
    "study_name",
    "study_birth_date",
    "mrn",
    "authority",
    "mpi_patient",
    "mpi_name",
    "mpi_birth_date",
    "delivery",
)


@app.command("list")
def list_proposals(
    status: Annotated[
        list[str] | None,
        typer.Option(
            help="pending (default), deferred, approved, rejected, withdrawn, closed,"
            " open (pending and deferred) or all; repeatable."
        ),
    ] = None,
    band: BandOption = None,
    min_probability: MinProbability = None,
    max_probability: MaxProbability = None,
    modality: ModalityOption = None,
    study_from: StudyFrom = "",
    study_to: StudyTo = "",
    limit: Annotated[int, typer.Option(help="At most this many proposals.")] = 500,
    output: Output = "table",
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Proposals, most probable first, with their merge's delivery once approved."""
    engine_config = _config(config, required=False)
    wanted = _filter(
        status, band, min_probability, max_probability, modality, study_from, study_to, limit
    )
    store = _open(db, engine_config)
    criteria = recorded(
        {
            "status": status,
            "band": band,
            "min_probability": min_probability,
            "max_probability": max_probability,
            "modality": modality,
            "study_from": study_from,
            "study_to": study_to,
            "limit": limit,
            "format": output,
        }
    )
    with audited(store, actions.REVIEW_LIST, criteria=criteria, config=engine_config) as audit:
        with store.connect() as connection:
            found = rows(connection, wanted, engine_config.review.mrn_authority)
        audit.add("proposal", *(r.proposal_id for r in found))
        _print_list(found, output, limit)


def _print_list(found: list[ReviewRow], output: str, limit: int) -> None:
    if output != "table":
        write_records([_flat(r) for r in found], output, LIST_COLUMNS)
        return
    fitted = fit(
        console,
        _LIST_COLUMNS,
        (
            (
                str(one.proposal_id),
                shown_probability(one.probability),
                one.band,
                one.status,
                shown_date(one.study.study_date, ""),
                one.study.modality,
                f"{one.study.person.name} {one.study.patient_id}",
                f"{one.patient.name} {one.mrn}",
                one.delivery,
            )
            for one in found
        ),
    )
    console.print(fitted.table)
    if fitted.dropped:
        console.print(fitted.note("widen the terminal or use --format csv"))
    console.print(
        f"{len(found)} proposal(s)" + (" (--limit reached)" if len(found) == limit else "")
    )


# Short values never fold; the people wrap between words (their ids stay whole).
_LIST_COLUMNS = (
    Column("id"),
    Column("p"),
    Column("band", drop=3),
    Column("status", drop=4),
    Column("date"),
    Column("mod", drop=2),
    Column("study (PACS)", WORDS),
    Column("candidate (MPI)", WORDS),
    Column("merge", TEXT, drop=1),
)


_DECISION_COLUMNS = (
    Column("when", WORDS),
    Column("proposal"),
    Column("action"),
    Column("by", WORDS),
    Column("reason", TEXT),
    Column("merge", drop=1),
)


def _item(store: Engine, proposal_id: int, mrn_authority: str) -> ReviewItem | None:
    with store.connect() as connection:
        return item(connection, proposal_id, mrn_authority)


def _show(store: Engine, found: ReviewItem, config: EngineConfig) -> None:
    print_screen(console, found, view(store, found.row.patient_id), config.reconciler)


@app.command("show")
def show(
    proposal_id: Annotated[int, typer.Argument(help="The proposal (from review list).")],
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """One proposal: the study and its candidate side by side, with the evidence.

    Also how the probability was reached, the other candidates, the patient's history, and the
    decisions and merge so far.
    """
    engine_config = _config(config, required=False)
    store = _open(db, engine_config)
    with audited(
        store, actions.REVIEW_SHOW, objects=[ref("proposal", proposal_id)], config=engine_config
    ) as audit:
        found = _item(store, proposal_id, engine_config.review.mrn_authority)
        if found is None:
            audit.refuse("no such proposal")
            fail(f"no proposal {proposal_id}", 1)
        _show(store, found, engine_config)


def _words(decided: Decided) -> str:
    words = f"proposal {decided.proposal_id}: {decided.action}"
    if decided.action == Action.APPROVED:
        words += f"; merge message {decided.control_id} queued for"
        words += f" {', '.join(decided.destinations)}"
    if decided.closed:
        words += f"; closed the study's other proposal(s) {', '.join(map(str, decided.closed))}"
    return words


DECIDED = {
    Action.APPROVED: actions.REVIEW_APPROVE,
    Action.REJECTED: actions.REVIEW_REJECT,
    Action.DEFERRED: actions.REVIEW_DEFER,
}
"""Decision → its action in the audit trail."""


def _attempt(trail: Trail, action: str, proposal_id: int, decision: Callable[[], Decided]) -> bool:
    """Make a decision; record it in the audit trail (done or refused, and why); print what
    happened, or why it was refused."""
    try:
        decided = decision()
    except ReviewError as error:
        record(
            trail,
            DECIDED[action],
            objects=[ref("proposal", proposal_id)],
            outcome=Outcome.REFUSED,
            detail=error.brief,
        )
        errors.print(f"[bold red]refused:[/] {error}", soft_wrap=True)
        return False
    objects = [ref("proposal", proposal_id)]
    if decided.message_id is not None:
        objects.append(ref("message", decided.message_id))
    detail = f"merge {decided.control_id} queued" if decided.control_id else ""
    if decided.closed:
        detail += f"; closed proposal(s) {', '.join(map(str, decided.closed))}"
    record(trail, DECIDED[action], objects=objects, detail=detail.lstrip("; "))
    console.print(_words(decided), soft_wrap=True)
    return True


def _approve_one(
    trail: Trail, store: Engine, config: EngineConfig, proposal_id: int, who: str, reason: str
) -> bool:
    route = Router(config).route
    return _attempt(
        trail,
        Action.APPROVED,
        proposal_id,
        lambda: approve(store, config.review, route, proposal_id, who, reason=reason),
    )


@app.command("approve")
def approve_proposals(
    proposal_ids: Annotated[
        list[int] | None, typer.Argument(help="Proposals to approve (or select with filters).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit).")] = "",
    band: BandOption = None,
    min_probability: MinProbability = None,
    max_probability: MaxProbability = None,
    modality: ModalityOption = None,
    study_from: StudyFrom = "",
    study_to: StudyTo = "",
    dry_run: Annotated[bool, typer.Option(help="Only show what would be approved.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    user: UserOption = None,
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Approve proposals and send their merges (ADT^A40 by default) to the PACS.

    By ids, or in a batch by filter (pending proposals, one per study) after a confirmation that
    shows the count. The merge goes through the routes of source `review`.
    """
    engine_config = _config(config, required=True)
    who = _reviewer(user)
    filters = any(
        (
            band,
            min_probability is not None,
            max_probability is not None,
            modality,
            study_from,
            study_to,
        )
    )
    if proposal_ids and filters:
        fail("give proposal ids or filters, not both")
    if not proposal_ids and not filters:
        fail("give proposal ids, or filters (--band, --min-probability, …) for a batch")
    store = _open(db, engine_config)
    trail = command_trail(store, user=who, config=engine_config)
    if proposal_ids:
        if dry_run:
            fail("--dry-run is for batches selected by filters")
        failed = sum(
            not _approve_one(trail, store, engine_config, pid, who, reason) for pid in proposal_ids
        )
        raise typer.Exit(1 if failed else 0)
    wanted = _filter(None, band, min_probability, max_probability, modality, study_from, study_to)
    with store.connect() as connection:
        found = rows(connection, wanted, engine_config.review.mrn_authority)
    chosen = one_per_study(found)
    # The selection is shown (PHI) before anything is approved.
    record(
        trail,
        actions.REVIEW_LIST,
        objects=[ref("proposal", one.proposal_id) for one in chosen],
        criteria=recorded(
            {
                "batch_approval": True,
                "dry_run": dry_run,
                "band": band,
                "min_probability": min_probability,
                "max_probability": max_probability,
                "modality": modality,
                "study_from": study_from,
                "study_to": study_to,
            }
        ),
        detail=f"{len(chosen)} proposal(s) selected",
    )
    if len(chosen) < len(found):
        errors.print(
            f"{len(found) - len(chosen)} proposal(s) left out: their study has another"
            " candidate in the selection (decide those one by one)"
        )
    if not chosen:
        console.print("nothing to approve")
        return
    for one in chosen[:20]:
        console.print(headline(one))
    if len(chosen) > 20:
        console.print(f"… and {len(chosen) - 20} more")
    if dry_run:
        console.print(f"dry run: {len(chosen)} proposal(s) would be approved")
        return
    if not yes and not typer.confirm(
        f"Approve {len(chosen)} proposal(s) and send their merges to the PACS?", err=True
    ):
        raise typer.Exit(1)
    batch_reason = reason or "batch approval by filter"
    failed = sum(
        not _approve_one(trail, store, engine_config, one.proposal_id, who, batch_reason)
        for one in chosen
    )
    console.print(f"{len(chosen) - failed} approved, {failed} refused")
    raise typer.Exit(1 if failed else 0)


@app.command("reject")
def reject_proposal(
    proposal_id: Annotated[int, typer.Argument(help="The proposal.")],
    reason: Annotated[str, typer.Option(help="Why it is not a match (required).")],
    user: UserOption = None,
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Reject a proposal: remembered as "not a match", never proposed again."""
    engine_config = _config(config, required=False)
    who = _reviewer(user)
    store = _open(db, engine_config)
    trail = command_trail(store, user=who, config=engine_config)
    if not _decide(trail, Action.REJECTED, store, proposal_id, who, reason):
        raise typer.Exit(1)


@app.command("defer")
def defer_proposal(
    proposal_id: Annotated[int, typer.Argument(help="The proposal.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit).")] = "",
    user: UserOption = None,
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Put a proposal aside for later.

    It leaves the `review next` queue; `review list --status deferred` finds it.
    """
    engine_config = _config(config, required=False)
    who = _reviewer(user)
    store = _open(db, engine_config)
    trail = command_trail(store, user=who, config=engine_config)
    if not _decide(trail, Action.DEFERRED, store, proposal_id, who, reason):
        raise typer.Exit(1)


_SIMPLE: dict[str, Callable[[Engine, int, str, str], Decided]] = {
    Action.REJECTED: reject,
    Action.DEFERRED: defer,
}


def _decide(
    trail: Trail, action: str, store: Engine, proposal_id: int, who: str, reason: str
) -> bool:
    """Reject or defer (see :func:`_attempt`)."""
    decision = _SIMPLE[action]
    return _attempt(trail, action, proposal_id, lambda: decision(store, proposal_id, who, reason))


KEYS = "[a]pprove  [r]eject  [d]efer  [s]kip  [q]uit"


@app.command("next")
def next_proposal(
    band: BandOption = None,
    min_probability: MinProbability = None,
    include_deferred: Annotated[
        bool, typer.Option(help="Also go through deferred proposals.")
    ] = False,
    user: UserOption = None,
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Decide proposals one after another, most probable first, with single keys.

    a approve, r reject (asks why), d defer, s skip, q quit.
    """
    engine_config = _config(config, required=True)
    who = _reviewer(user)
    store = _open(db, engine_config)
    trail = command_trail(store, user=who, config=engine_config)
    authority = engine_config.review.mrn_authority
    statuses = ProposalStatus.OPEN if include_deferred else (ProposalStatus.PENDING,)
    wanted = ReviewFilter(
        statuses=statuses, bands=tuple(band or ()), min_probability=min_probability
    )
    with store.connect() as connection:
        queue = [r.proposal_id for r in rows(connection, wanted, authority)]
    counts = dict.fromkeys((Action.APPROVED, Action.REJECTED, Action.DEFERRED, "skipped"), 0)
    if not queue:
        console.print("nothing to review")
        return
    for position, proposal_id in enumerate(queue, 1):
        current = _item(store, proposal_id, authority)
        if current is None or current.row.status not in statuses:
            continue  # decided elsewhere meanwhile
        console.rule(f"{position} of {len(queue)}")
        _show(store, current, engine_config)
        record(trail, actions.REVIEW_NEXT, objects=[ref("proposal", proposal_id)])
        action = _ask(trail, store, engine_config, proposal_id, who)
        if action == "quit":
            break
        counts[action] += 1
    console.print("done: " + ", ".join(f"{count} {name}" for name, count in counts.items()))


def _ask(trail: Trail, store: Engine, config: EngineConfig, proposal_id: int, who: str) -> str:
    while True:
        console.print(Text(KEYS, style="bold"), end=" ")
        key = read_key()
        console.print(key)
        if key == "q":
            return "quit"
        if key == "s":
            return "skipped"
        if key == "a":
            approved = _approve_one(trail, store, config, proposal_id, who, "")
            return Action.APPROVED if approved else "skipped"
        if key == "d":
            deferred = _decide(trail, Action.DEFERRED, store, proposal_id, who, "")
            return Action.DEFERRED if deferred else "skipped"
        if key == "r":
            reason = console.input("why is it not a match? (empty: back) ").strip()
            if not reason:
                continue
            done = _decide(trail, Action.REJECTED, store, proposal_id, who, reason)
            return Action.REJECTED if done else "skipped"
        console.print(f"unknown key {key!r}")


AUDIT_COLUMNS = (
    "decision_id",
    "decided_at",
    "proposal_id",
    "action",
    "previous_status",
    "reviewer",
    "automatic",
    "reason",
    "study_uid",
    "patient_id",
    "merge_control_id",
    "snapshot",
)


@app.command("audit")
def audit(
    proposal: Annotated[int | None, typer.Option(help="Only decisions on this proposal.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this reviewer's.")] = None,
    action: Annotated[
        list[str] | None,
        typer.Option(help="Only approved, rejected, deferred, closed or followed_merge."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only since (2026-11-23, 2026-11-23T14:05, 7d).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the newest N.")] = None,
    output: Output = "table",
    db: DbOption = None,
) -> None:
    """Every decision: who, when, what, why (csv/json: with a snapshot of what they saw)."""
    store = open_store_or_fail(db)
    wanted = recorded(
        {
            "proposal": proposal,
            "user": user,
            "action": action,
            "since": since,
            "limit": limit,
            "format": output,
        }
    )
    with audited(store, actions.REVIEW_AUDIT, criteria=wanted) as audit:
        with store.connect() as connection:
            found = decision_views(
                connection,
                proposal_id=proposal,
                reviewer=user,
                actions=tuple(action or ()),
                since=parse_when(since) if since else None,
                limit=limit,
            )
        audit.add("proposal", *(d.proposal_id for d in found))
        audit.detail = f"{len(found)} decision(s)"
        _print_decisions(found, output)


def _print_decisions(found: list[DecisionView], output: str) -> None:
    if output != "table":
        records = [
            {
                "decision_id": d.id,
                "decided_at": d.decided_at.isoformat(timespec="seconds"),
                "proposal_id": d.proposal_id,
                "action": d.action,
                "previous_status": d.previous_status,
                "reviewer": d.reviewer,
                "automatic": d.automatic,
                "reason": d.reason,
                "study_uid": d.study_uid,
                "patient_id": d.patient_id,
                "merge_control_id": d.control_id,
                "snapshot": d.snapshot if output == "json" else json.dumps(d.snapshot),
            }
            for d in found
        ]
        write_records(records, output, AUDIT_COLUMNS)
        return
    fitted = fit(
        console,
        _DECISION_COLUMNS,
        (
            (
                local_time(d.decided_at),
                str(d.proposal_id),
                d.action,
                d.reviewer + (" (auto)" if d.automatic and "auto" not in d.reviewer else ""),
                d.reason,
                d.control_id,
            )
            for d in found
        ),
    )
    console.print(fitted.table)
    if fitted.dropped:
        console.print(fitted.note("widen the terminal or use --format csv"))
    console.print(f"{len(found)} decision(s)")


WasIsFormat = Literal["crosswalk", "migration", "patient-map", "dicom-tags"]


@app.command("export-was-is")
def export_was_is(
    file: Annotated[Path, typer.Argument(help="CSV file to write.")],
    layout: Annotated[
        WasIsFormat,
        typer.Option(
            "--format",
            help="Columns: crosswalk (everything, per study), migration (old/new id and issuer,"
            " study UID, accession), patient-map (old id -> new id, one row per old id),"
            " dicom-tags (per study, DICOM keywords: the tags to set). See docs/review.md.",
        ),
    ] = "crosswalk",
    db: DbOption = None,
) -> None:
    """Write the was-is list of every approval (CSV) for the PACS, migration tools and
    downstream teams: old patient id and issuer -> the MPI patient's MRN and authority."""
    store = open_store_or_fail(db)
    with audited(
        store, actions.REVIEW_WAS_IS, objects=[ref("file", file)], criteria={"format": layout}
    ) as audit:
        with store.connect() as connection:
            found = approvals(connection)
        result = was_is(found, layout)
        audit.add("proposal", *(approval.proposal_id for approval in found))
        audit.detail = f"{len(found)} approval(s)"
        try:
            with file.open("w", newline="", encoding="utf-8") as target:
                write_records(result.rows, "csv", LAYOUTS[layout].columns, target)
        except OSError as error:
            audit.refuse(f"the file cannot be written: {error.strerror or type(error).__name__}")
            fail(f"{file}: {error.strerror or error}")
        console.print(f"{file}: {len(result.rows)} row(s) from {len(found)} approval(s)")
        if result.left_out:
            audit.detail += f"; {len(result.left_out)} left out"
            for reason in result.left_out:
                console.print(f"left out: {reason}", markup=False)
            fail(f"{len(result.left_out)} could not be written as {layout} (listed above)", 1)
