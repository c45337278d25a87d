"""The console's session-signing key, made once and kept in the store.

Every console on the store (after a restart, or several behind one address) signs and reads
session cookies with the same key, so restarting the console does not log everyone out.
``$CROSSWALK_CONSOLE_KEY``, when set, still takes precedence (see ``engine.console.visits``).
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from engine.store.crypto import ContentError
from engine.store.database import for_writing
from engine.store.schema import table_of
from engine.users.tables import ConsoleKey

SESSION = "session"
"""The name of the key that signs session cookies."""

_keys = table_of(ConsoleKey)


def stored_key(store: Engine, name: str = SESSION) -> bytes:
    """The key ``name``: read from the store, or made (32 random bytes) and stored at first."""
    for _ in range(2):
        with store.connect() as connection:
            try:
                value = connection.execute(
                    select(_keys.c.value).where(_keys.c.name == name)
                ).scalar()
            except ContentError:  # sealed by keys this process lacks: a new key replaces it
                value = None
                with for_writing(store).begin() as writing:
                    writing.execute(delete(_keys).where(_keys.c.name == name))
        if value:
            return base64.urlsafe_b64decode(value)
        made = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
        try:
            with for_writing(store).begin() as connection:
                connection.execute(
                    insert(_keys).values(name=name, value=made, created_at=datetime.now(UTC))
                )
            return base64.urlsafe_b64decode(made)
        except IntegrityError:  # another console made it first: read theirs
            continue
    raise RuntimeError(f"the console key {name!r} could neither be read nor made")
