"""The store's settings (the ``store:`` section): encryption of message content at rest."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.settings import Issue, setting
from engine.store.crypto import ENV_VAR, ContentError, Keyring


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    """How the store keeps message content (see docs/security.md)."""

    encrypt_content: bool = setting(
        "Encrypt content at rest (AES-256-GCM): messages, ACKs, status reasons, delivery"
        " payloads and answers; the MPI's and study index's demographics (identifiers and"
        " blocking keys as keyed hashes); proposals' evidence. Needs a keys file; on whenever"
        f" ${ENV_VAR} names it.",
        default=False,
    )
    keys: Path | None = setting(
        "The keys file (one `ID BASE64KEY` line per key; the last one encrypts), relative to"
        f" this file; default: ${ENV_VAR}. Create one with `crosswalk keys new FILE`.",
        default=None,
        example="/etc/crosswalk/content.keys",
    )

    def keys_file(self) -> Path | None:
        """The keys file: this section's, else the environment's."""
        if self.keys is not None:
            return self.keys
        named = os.environ.get(ENV_VAR)
        return Path(named).expanduser() if named else None

    def keyring(self) -> Keyring | None:
        """The keys to read (and, with ``encrypt_content``, write) content with; None when
        there is no keys file. ``ContentError`` when it cannot be used."""
        path = self.keys_file()
        if path is None:
            return None
        # Keys given by the environment encrypt, as for every command run without a
        # configuration: one process writing clear look-ups beside another's hashed ones
        # would hide rows from both.
        return Keyring.load(path, encrypt=self.encrypt_content or self.keys is None)

    def check(self) -> list[Issue]:
        if self.encrypt_content and self.keys_file() is None:
            return [Issue("encrypt_content needs a keys file", f"keys: FILE, or ${ENV_VAR}")]
        try:
            self.keyring()
        except ContentError as error:
            return [Issue(str(error))]
        return []
