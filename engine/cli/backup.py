"""``crosswalk backup FILE``, ``crosswalk backup verify FILE`` and ``crosswalk restore FILE --db
NEW``: backups taken while the engine runs, checked, and restored onto a fresh place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from engine.audit import actions
from engine.backup.archive import BackupError, Checked, restore_backup, take_backup, verify_backup
from engine.backup.contents import Contents
from engine.backup.postgres import DumpError
from engine.cli.auditing import audited
from engine.cli.common import DbOption, console, errors, fail, open_store_or_fail
from engine.store import crypto
from engine.store.database import resolve_url

KeysOption = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help=f"The keys file to encrypt or read the backup with (default: ${crypto.ENV_VAR}).",
        show_default=False,
    ),
]


def _say(line: str) -> None:
    console.print(line, soft_wrap=True, markup=False)


def _keyring(keys: Path | None) -> crypto.Keyring | None:
    path = keys or (Path(os.environ[crypto.ENV_VAR]) if os.environ.get(crypto.ENV_VAR) else None)
    if path is None:
        return None
    try:
        return crypto.Keyring.load(path)
    except crypto.ContentError as error:
        fail(str(error))


def backup(
    words: Annotated[
        list[str],
        typer.Argument(
            help="FILE to write, or `verify FILE` to check one.", metavar="[verify] FILE"
        ),
    ],
    db: DbOption = None,
    keys: KeysOption = None,
    encrypt: Annotated[
        bool | None,
        typer.Option(
            "--encrypt/--no-encrypt",
            help="Encrypt with the keys file's current key (default: when there is a keys file).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Back up the store while the engine runs (SQLite: the online backup API, one moment's
    copy; PostgreSQL: pg_dump). `crosswalk backup verify FILE` reads one back and says what
    it holds."""
    if len(words) == 2 and words[0] == "verify":
        _verify(Path(words[1]), keys)
        return
    if len(words) != 1:
        fail("expected `crosswalk backup FILE` or `crosswalk backup verify FILE`")
    target = Path(words[0])
    keyring = _keyring(keys)
    if encrypt and keyring is None:
        fail(f"--encrypt needs a keys file: --keys FILE or ${crypto.ENV_VAR}")
    store = open_store_or_fail(db)
    with audited(store, actions.STORE_BACKUP, objects=[str(target)]):
        try:
            taken = take_backup(db, target, keyring if encrypt is not False else None)
        except (BackupError, DumpError, crypto.ContentError) as error:
            fail(str(error))
    sealed = f", encrypted with key {keyring.current}" if taken.encrypted and keyring else ""
    _say(f"{target}: written in {taken.seconds:.1f} s{sealed}")
    if taken.contents is not None:
        _describe(taken.contents)


def _verify(path: Path, keys: Path | None) -> None:
    try:
        checked = verify_backup(path, _keyring(keys))
    except (BackupError, DumpError, crypto.ContentError) as error:
        fail(str(error))
    _show(path, checked)
    if not checked.ok:
        raise typer.Exit(1)


def _show(path: Path, checked: Checked) -> None:
    sealed = "encrypted" if checked.encrypted else "not encrypted"
    _say(f"{path}: {checked.kind} backup, {sealed}")
    if checked.contents is not None:
        _describe(checked.contents)
    else:
        entries = [line for line in checked.listing.splitlines() if " TABLE DATA " in line]
        _say(f"  readable: {len(entries)} tables of data (pg_restore --list)")


def _describe(contents: Contents) -> None:
    _say(f"  integrity: {contents.integrity}")
    _say(f"  migration: {contents.migration or 'none (not a Crosswalk store?)'}")
    if contents.taken_at:
        _say(f"  taken at: {contents.taken_at} (UTC), from {contents.source}")
    counts = ", ".join(f"{table} {count:,}" for table, count in contents.counts.items())
    _say(f"  rows: {counts}")
    statuses = ", ".join(f"{status} {n:,}" for status, n in sorted(contents.by_status.items()))
    _say(f"  messages by status: {statuses or 'none'}; deliveries queued {contents.queued:,}")
    _say(f"  newest message: {contents.newest_message or 'none'} (id {contents.last_message_id})")
    for point in contents.points:
        _say(
            f"  recovery point, listener {point.listener}: message {point.message_id},"
            f" control id {point.control_id}, received {point.received_at}"
        )


def restore(
    file: Annotated[Path, typer.Argument(help="The backup to restore.")],
    db: Annotated[
        str,
        typer.Option("--db", help="Where to: a new SQLite file, or an empty PostgreSQL database."),
    ],
    keys: KeysOption = None,
) -> None:
    """Restore a backup onto a fresh place; `crosswalk serve --db` there resumes: queued
    deliveries continue in order, the MPI, proposals and decisions are there. Senders must send
    again what they sent after each listener's recovery point."""
    try:
        checked = restore_backup(file, db, _keyring(keys))
    except (BackupError, DumpError, crypto.ContentError) as error:
        fail(str(error))
    _show(file, checked)
    store = open_store_or_fail(db)
    with audited(store, actions.STORE_RESTORE, objects=[str(file)]):
        pass
    _say(f"restored onto {resolve_url(db)}: start the engine with --db there")
    errors.print(
        "Messages received after the recovery point are not in this store: have each sender"
        " send again what it sent after the control id shown for its listener."
    )
