"""``crosswalk prune``: apply the ``retention:`` section now (or, ``--dry-run``, say what that
would remove); ``--compact`` converts an older SQLite store to incremental vacuum."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from engine.audit import actions
from engine.cli.auditing import audited
from engine.cli.common import (
    DbOption,
    console,
    errors,
    fail,
    load_config_or_fail,
    open_store_or_fail,
)
from engine.retention.prune import Pruning, auto_vacuum_mode, plan
from engine.retention.settings import RetentionSettings
from engine.store.database import raw_transaction
from engine.store.fastsql import Statements

DEFAULT_CONFIG = Path("routes")


def prune(
    config: Annotated[
        Path, typer.Option(help="Configuration folder (its `retention:` section).")
    ] = DEFAULT_CONFIG,
    db: DbOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be pruned; change nothing.")
    ] = False,
    rate: Annotated[
        int | None,
        typer.Option(min=1, help="Messages pruned per second at most (default: the section's)."),
    ] = None,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="SQLite: rebuild the file with incremental vacuum (stop the engine first).",
        ),
    ] = False,
) -> None:
    """Prune messages by the `retention:` section: content (bytes, ACKs, payloads) and then
    metadata (the records) older than their periods, never a message with a delivery still
    queued. Safe while the engine runs (small transactions at a bounded rate)."""
    settings = load_config_or_fail(config).retention
    store = open_store_or_fail(db)
    if compact:
        _compact(store)
        return
    if settings is None:
        fail(f"no `retention:` section in {config}: nothing is pruned (docs/operations.md)")
    _show_plan(store, settings)
    if dry_run:
        return
    with audited(store, actions.STORE_PRUNE, config=config) as audit:
        pruned = _prune(store, settings, rate or settings.rate)
        audit.detail = ", ".join(f"{name}: {count}" for name, count in pruned.items())
    for name, count in pruned.items():
        console.print(f"{name}: {count:,} message(s) pruned")


def _show_plan(store: Engine, settings: RetentionSettings) -> None:
    console.print(
        f"{'kind':<9} {'category':<10} {'received before':<20} {'prunable':>10} {'held':>8}"
    )
    for planned in plan(store, settings):
        before = planned.cutoff.astimezone().strftime("%Y-%m-%d %H:%M")
        console.print(
            f"{planned.rule.kind:<9} {planned.rule.category:<10} {before:<20}"
            f" {planned.prunable:>10} {planned.held:>8}"
        )
    console.print("held: a delivery still queued or set aside, or a review decision's message")


def _prune(store: Engine, settings: RetentionSettings, rate: int) -> dict[str, int]:
    pruning = Pruning(settings)
    statements = Statements(store)
    with store.connect() as connection:
        pruning.load(connection)
    pruned: dict[str, int] = {}
    for rule in pruning.rules:
        pruned[rule.name] = 0
        while True:
            started = time.monotonic()
            with store.connect() as connection:
                batch = pruning.next_batch(connection, rule)
            if batch is None:
                break
            with raw_transaction(store) as cursor:
                applied = pruning.apply(cursor, statements, batch)
            pruning.advance(batch, applied)
            pruned[rule.name] += applied.pruned
            time.sleep(max(0.0, len(batch.ids) / rate - (time.monotonic() - started)))
            if batch.last:
                break
    return pruned


def _compact(store: Engine) -> None:
    mode = auto_vacuum_mode(store)
    if mode is None:
        fail("--compact is for SQLite stores (PostgreSQL's autovacuum reuses space itself)")
    errors.print(
        f"auto_vacuum was {mode}; rebuilding the file (VACUUM): the engine must be stopped"
    )
    with store.connect() as connection:
        connection.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
        connection.exec_driver_sql("VACUUM")
    console.print(f"auto_vacuum is now {auto_vacuum_mode(store)}")
