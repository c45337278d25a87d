"""``crosswalk keys``: the keys that encrypt content at rest (messages, the MPI, the study index)
— new, status, rotate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from engine.audit import actions
from engine.cli.auditing import audited
from engine.cli.common import DbOption, console, errors, fail, open_store_or_fail
from engine.store import crypto
from engine.store.keys import rotate, usage

app = typer.Typer(
    help="Keys that encrypt content at rest: new, status, rotate.", no_args_is_help=True
)

KeysFile = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help=f"The keys file (default: ${crypto.ENV_VAR}).",
        show_default=False,
    ),
]


def _keys_file(keys: Path | None) -> Path:
    found = keys or (Path(os.environ[crypto.ENV_VAR]) if os.environ.get(crypto.ENV_VAR) else None)
    if found is None:
        fail(f"no keys file: give --keys FILE or set {crypto.ENV_VAR}")
    return found


@app.command("new")
def new(file: Annotated[Path, typer.Argument(help="The keys file to create.")]) -> None:
    """Create a keys file with one new key (readable by its owner only)."""
    try:
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{file} exists; `crosswalk keys rotate` adds a key to it")
    except OSError as error:
        fail(f"{file}: cannot create: {error.strerror}")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(
            "# Crosswalk content keys: ID BASE64KEY per line; the last one encrypts.\n"
            "# Keep this file apart from the database and its backups; never delete a key\n"
            "# that `crosswalk keys status` still counts.\n"
        )
        handle.write(crypto.new_key_line() + "\n")
    console.print(f"{file}: created with one key; set {crypto.ENV_VAR}={file}")


@app.command("status")
def status(keys: KeysFile = None, db: DbOption = None) -> None:
    """How many stored values each key encrypts, column by column (``clear``: not encrypted)."""
    path = _keys_file(keys)
    keyring = _load(path)
    crypto.configure(keyring)
    store = open_store_or_fail(db)
    table = Table("column", "key", "values", show_edge=False, header_style="bold")
    for column, counts in usage(store).items():
        for key, count in sorted(counts.items()):
            shown = f"{key} (current)" if key == keyring.current else key
            if key not in keyring.keys and key != "clear":
                shown += " — NOT IN THE KEYS FILE"
            table.add_row(column, shown, f"{count:,}")
    console.print(table)
    console.print(
        f"Look-ups (identifiers, blocking keys, search hashes) are hashed with a key derived from"
        f" {keyring.lookup_id}, the first key of the file: never remove it."
    )


@app.command("rotate")
def rotate_keys(
    keys: KeysFile = None,
    db: DbOption = None,
    batch: Annotated[int, typer.Option(min=1, help="Rows re-encrypted per transaction.")] = 500,
) -> None:
    """Add a new key to the keys file and re-encrypt the stored content with it, a batch at a
    time, while the engine runs (it picks up the new key within seconds). Old keys stay in the
    file: backups may still need them."""
    path = _keys_file(keys)
    _load(path)  # the file must be sound before it is changed
    with path.open("a", encoding="utf-8") as handle:
        handle.write(crypto.new_key_line() + "\n")
    keyring = _load(path)
    crypto.configure(keyring)
    store = open_store_or_fail(db)
    console.print(f"{path}: new current key {keyring.current}; re-encrypting")
    with audited(store, actions.KEYS_ROTATE, criteria={"key": keyring.current}):
        done = rotate(store, keyring, batch=batch)
    for column, count in done.per_column.items():
        console.print(f"  {column}: {count:,} value(s) re-encrypted")
    for column, count in done.hashed.items():
        console.print(f"  {column}: {count:,} look-up value(s) hashed (written before encryption)")
    if done.skipped:
        errors.print(
            f"{done.skipped} value(s) changed by the engine meanwhile were left to it; run"
            " `crosswalk keys status` after a few seconds"
        )


def _load(path: Path) -> crypto.Keyring:
    try:
        return crypto.Keyring.load(path)
    except crypto.ContentError as error:
        fail(str(error))
