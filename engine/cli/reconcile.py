"""``crosswalk reconcile``: score orphaned studies against the MPI, show the model, export.

These commands handle patient data (PHI) on purpose; the engine's logs never do.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from engine.audit import actions
from engine.audit.trail import criteria as recorded
from engine.cli.auditing import Audit, audited
from engine.cli.common import (
    DbOption,
    console,
    errors,
    fail,
    load_config_or_fail,
    local_time,
    open_store_or_fail,
    write_records,
)
from engine.config.model import EngineConfig
from engine.reconcile.comparisons import COMPARISONS
from engine.reconcile.estimation import Parameters
from engine.reconcile.learning import Learnt
from engine.reconcile.proposals import EXPORT_COLUMNS, export_rows
from engine.reconcile.run import latest_parameters, reconcile
from engine.review.upkeep import auto_approve, automatic_approvals
from engine.routes.router import Router
from engine.studies.settings import parse_study_date

DEFAULT_CONFIG = Path("routes")
app = typer.Typer(
    help="Match orphaned studies to MPI patients: run, params, export.", no_args_is_help=True
)
ConfigOption = Annotated[
    Path,
    typer.Option(help="Configuration folder (its `reconciler:` section; defaults otherwise)."),
]


def _config(config: Path) -> EngineConfig:
    if config == DEFAULT_CONFIG and not config.exists():
        errors.print(f"note: no {config}/ here; the reconciler's default settings apply")
        return EngineConfig.default()
    return load_config_or_fail(config)


@app.command("run")
def run(
    since: Annotated[
        str, typer.Option(help="Only studies with a study date on or after this (YYYY-MM-DD).")
    ] = "",
    rebuild_keys: Annotated[
        bool, typer.Option(help="Recompute every patient's blocking keys, not just changes.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Score every orphaned study against the MPI and write merge proposals.

    Idempotent: a re-run refreshes pending proposals, never proposes a pair a reviewer
    rejected, never touches a decided one, and closes those of studies no longer orphaned.
    """
    day = ""
    if since:
        parsed = parse_study_date(since)
        if parsed is None:
            fail(f"--since {since!r} is not a date (YYYY-MM-DD)")
        day = parsed
    engine_config = _config(config)
    store = open_store_or_fail(db)
    wanted = recorded({"since": since, "rebuild_keys": rebuild_keys})
    with audited(store, actions.RECONCILE_RUN, criteria=wanted, config=engine_config) as audit:
        _run(store, engine_config, day, rebuild_keys, audit)


def _run(
    store: Engine, engine_config: EngineConfig, day: str, rebuild_keys: bool, audit: Audit
) -> None:
    settings = engine_config.reconciler
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}"))
    with Progress(
        *columns, TimeElapsedColumn(), console=errors, disable=not errors.is_terminal
    ) as bar:
        tasks: dict[str, TaskID] = {}
        labels = {
            "keys": "blocking keys",
            "orphans": "orphaned studies",
            "compare": "candidate pairs",
        }

        def progress(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        report = reconcile(
            store,
            settings,
            since=day,
            rebuild_keys=rebuild_keys,
            progress=progress,
            machine_decided=automatic_approvals,
        )
    written = report.written
    audit.add("run", report.run_id)
    audit.detail = (
        f"{report.orphans} orphaned studies, {written.new} new, {written.refreshed} refreshed,"
        f" {written.withdrawn} withdrawn, {written.closed} closed proposal(s)"
    )
    flagged = f" ({report.flagged:,} with flagged values)" if report.flagged else ""
    console.print(
        f"run {report.run_id}: {report.orphans:,} orphaned studies, {report.scored:,} scored"
        f"{flagged}, {report.pairs:,} candidate pairs"
    )
    bands = ", ".join(f"{count:,} {band}" for band, count in sorted(written.bands.items()))
    console.print(
        f"proposals: {written.new:,} new, {written.refreshed:,} refreshed"
        f" ({bands or 'none'}); {written.withdrawn:,} withdrawn, {written.closed:,} closed"
    )
    learnt = Learnt.from_dict(report.parameters.learning if report.parameters else None)
    if learnt is not None and learnt.approved + learnt.rejected:
        console.print(
            f"learnt from {learnt.approved + learnt.rejected:,} reviewers' decisions"
            f" ({learnt.approved:,} approved, {learnt.rejected:,} rejected):"
            f" {len(learnt.patterns):,} pattern(s) moved, strong threshold"
            f" {learnt.strong_before:g} -> {learnt.strong_after:.4f}"
            " (`crosswalk reconcile params --changes`)"
        )
    review = engine_config.review
    if review.auto_approve_band:
        automatic = auto_approve(store, review, Router(engine_config).route)
        audit.add("proposal", *(decided.proposal_id for decided in automatic.approved))
        audit.detail += f"; {len(automatic.approved)} approved automatically"
        console.print(
            f"approved automatically (band {review.auto_approve_band}, probability >="
            f" {review.auto_approve_min_probability}): {len(automatic.approved):,};"
            f" refused: {len(automatic.refused):,}"
        )
        for reason in automatic.refused:
            errors.print(f"  {reason}", markup=False, soft_wrap=True)


@app.command("params")
def params(
    output: Annotated[
        Literal["table", "json"], typer.Option("--format", help="Output format.")
    ] = "table",
    changes: Annotated[
        bool,
        typer.Option(
            "--changes",
            help="What reviewers' decisions moved: each level's m and weight before and after,"
            " the strong threshold, the patterns decided.",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """The model's parameters as the newest run estimated them: per comparison level, m (how
    often matches agree so), u (how often non-matches do) and the weight log2(m/u)."""
    store = open_store_or_fail(db)
    with store.connect() as connection:
        latest = latest_parameters(connection)
    if latest is None:
        fail("no finished reconcile run yet; run `crosswalk reconcile run` first", 1)
    run_id, finished, parameters = latest
    if changes:
        _changes(run_id, parameters, output)
        return
    if output == "json":
        sys.stdout.write(parameters.to_json() + "\n")
        return
    console.print(
        f"run {run_id}, {local_time(finished) if finished else '-'}:"
        f" {parameters.candidate_pairs:,} candidate pairs, {parameters.random_pairs:,} random"
        f" pairs; {parameters.patients:,} live MPI patients; share of orphans whose patient is"
        f" in the MPI (estimated) {parameters.match_rate:.3f}"
    )
    how = (
        f"m by EM, {parameters.em_iterations} iterations"
        f" ({'converged' if parameters.em_converged else 'not converged'})"
        if parameters.estimated_m
        else "m carried over (too few candidate pairs to estimate it)"
    )
    learnt = Learnt.from_dict(parameters.learning)
    if learnt is not None and learnt.approved + learnt.rejected:
        how += (
            f"; refined by {learnt.approved + learnt.rejected:,} reviewers' decisions"
            " (what moved: --changes)"
        )
    console.print(how)
    table = Table("comparison", "level", "m", "u", "weight (bits)")
    weights = parameters.weights()
    for index, comparison in enumerate(COMPARISONS):
        for level, name in enumerate(comparison.names):
            if level == 0:
                continue
            table.add_row(
                comparison.name if level == 1 else "",
                name,
                f"{parameters.m[comparison.name][level]:.4f}",
                f"{parameters.u[comparison.name][level]:.6f}",
                f"{weights[index][level]:+.2f}",
            )
    console.print(table)


def _changes(run_id: int, parameters: Parameters, output: str) -> None:
    learnt = Learnt.from_dict(parameters.learning)
    if output == "json":
        sys.stdout.write(json.dumps(learnt.to_dict() if learnt else None) + "\n")
        return
    if learnt is None:
        console.print(f"run {run_id} did not learn from decisions (reconciler: learning is off)")
        return
    console.print(
        f"run {run_id} learnt from {learnt.approved:,} approved and {learnt.rejected:,} rejected"
        f" proposal(s) ({learnt.left_out:,} left out: approved automatically or unreadable);"
        f" the model counts for {learnt.prior_weight:g} decisions"
    )
    console.print(
        f"strong threshold: {learnt.strong_before:g} -> {learnt.strong_after:.4f}"
        if learnt.strong_after != learnt.strong_before
        else f"strong threshold: {learnt.strong_before:g} (unchanged)"
    )
    before = dataclasses.replace(parameters, m=learnt.m_before).weights()
    after = parameters.weights()
    table = Table("comparison", "level", "m before", "m after", "u", "weight before", "after")
    for index, comparison in enumerate(COMPARISONS):
        for level, name in enumerate(comparison.names[1:], start=1):
            table.add_row(
                comparison.name if level == 1 else "",
                name,
                f"{learnt.m_before[comparison.name][level]:.4f}",
                f"{parameters.m[comparison.name][level]:.4f}",
                f"{parameters.u[comparison.name][level]:.6f}",
                f"{before[index][level]:+.2f}",
                f"{after[index][level]:+.2f}",
            )
    console.print(table)
    if not learnt.patterns:
        return
    patterns = Table("pattern (levels other than null)", "decided", "approved", "p", "p after")
    for pattern in sorted(learnt.patterns, key=lambda p: -p.decided):
        shown = ", ".join(f"{k}={v}" for k, v in pattern.levels.items() if v != "null")
        model = pattern.model
        moved = pattern.adjusted(model, learnt.prior_weight)
        patterns.add_row(
            shown, str(pattern.decided), str(pattern.approved), f"{model:.4f}", f"{moved:.4f}"
        )
    console.print(patterns)


@app.command("export")
def export(
    output: Annotated[Literal["csv", "json"], typer.Option("--format", help="Output format.")] = (
        "csv"
    ),
    status: Annotated[
        list[str] | None, typer.Option(help="Only proposals with this status (repeatable).")
    ] = None,
    band: Annotated[
        list[str] | None, typer.Option(help="Only proposals in this band (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write to this file, not stdout.")] = None,
    db: DbOption = None,
) -> None:
    """Every proposal, best candidate first within each study.

    Columns: proposal_id, study_uid, patient_id and issuer (the study's id as the PACS recorded
    it), mrn and authority (the proposed MPI patient), mpi_patient, probability, band, rank,
    status, match_weight, study_date, modality, accession, evidence (JSON).
    """
    store = open_store_or_fail(db)
    wanted = recorded({"format": output, "status": status, "band": band, "out": out})
    with audited(store, actions.RECONCILE_EXPORT, criteria=wanted) as audit:
        with store.connect() as connection:
            rows = list(export_rows(connection, status, band))
        audit.add("proposal", *(row["proposal_id"] for row in rows))
        audit.detail = f"{len(rows)} proposal(s)"
        _write_export(rows, output, out)


def _write_export(rows: list[dict[str, Any]], output: str, out: Path | None) -> None:
    if output == "json":
        for row in rows:
            row["evidence"] = json.loads(row["evidence"])
    target = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        write_records(rows, output, EXPORT_COLUMNS, target)
    finally:
        if out:
            target.close()
    if out:
        errors.print(f"{out}: {len(rows):,} proposals")
