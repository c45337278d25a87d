"""Message content encrypted at rest: AES-256-GCM (``cryptography``), each value carrying the id
of its key, so that keys can be rotated while the engine runs.

What is encrypted: the columns declared :class:`EncryptedBytes` or :class:`EncryptedText` (a
message's bytes, its ACKs and status reason; a delivery's payload, the destination's answer and
its last error). Their values are encrypted on the way into the database and decrypted on the
way out, by the column type itself, so every reader (the router, delivery, the CLI, the review)
sees clear content without knowing. A value written before encryption was turned on stays
readable; ``crosswalk keys rotate`` encrypts it with the current key.

The keys file holds one key per line, ``ID BASE64(32 bytes)``; the last line is the current key
(new content is encrypted with it); ``#`` lines are comments. Keep it apart from the database
and its backups, readable by the engine's user only.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, Text, TypeDecorator
from sqlalchemy.engine import Dialect

from engine.errors import CrosswalkError

__all__ = [
    "ENV_VAR",
    "ContentError",
    "EncryptedBytes",
    "EncryptedText",
    "Keyring",
    "configure",
    "current_keyring",
    "key_of",
    "new_key_line",
]

ENV_VAR = "CROSSWALK_KEYS"
"""Names the keys file when the configuration does not (``store: keys:``)."""
MAGIC = b"\x00\x01CWE1"
"""Starts every encrypted value. No HL7 message starts with NUL; a received frame that does
anyway is stored escaped (:data:`ESCAPED`), so clear and encrypted values never collide."""
ESCAPED = b"\x00\x01CWC1"
TEXT_MAGIC = "cwe1:"
NONCE = 12
RECHECK = 5.0
"""Seconds between looks at the keys file for a new current key."""


class ContentError(CrosswalkError, ValueError):
    """Encrypted content cannot be read: its key is not in the keys file, or it was changed."""


@dataclass
class Keyring:
    """The keys of one keys file; the last one encrypts."""

    keys: dict[str, bytes]
    current: str
    path: Path | None = None
    encrypt: bool = True
    """Encrypt what is written (else only read what was encrypted before)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _checked: float = field(default_factory=time.monotonic, repr=False)
    _stamp: float = field(default=0.0, repr=False)

    @classmethod
    def load(cls, path: Path, *, encrypt: bool = True) -> Keyring:
        """Read a keys file; ``ContentError`` naming the file and line of a bad one."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ContentError(f"{path}: cannot read the keys file: {error.strerror}") from None
        keys: dict[str, bytes] = {}
        current = ""
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not 0 < len(parts[0].encode()) < 256:
                raise ContentError(f"{path}:{number}: expected 'ID BASE64KEY'")
            try:
                key = base64.b64decode(parts[1], validate=True)
            except binascii.Error:
                raise ContentError(f"{path}:{number}: the key is not base64") from None
            if len(key) != 32:
                raise ContentError(f"{path}:{number}: a key must be 32 bytes (AES-256)")
            keys[parts[0]] = key
            current = parts[0]
        if not keys:
            raise ContentError(f"{path}: no key in the keys file")
        return cls(keys, current, path, encrypt, _stamp=path.stat().st_mtime)

    def reload(self) -> None:
        """Read the keys file again (a key was added by ``crosswalk keys rotate``)."""
        if self.path is None:
            return
        fresh = Keyring.load(self.path, encrypt=self.encrypt)
        with self._lock:
            self.keys, self.current, self._stamp = fresh.keys, fresh.current, fresh._stamp

    def _follow(self) -> None:
        """A running engine picks up a key ``crosswalk keys rotate`` added: the file is looked
        at every few seconds, and read again when it changed."""
        now = time.monotonic()
        if self.path is None or now - self._checked < RECHECK:
            return
        self._checked = now
        try:
            changed = self.path.stat().st_mtime != self._stamp
        except OSError:
            return
        if changed:
            self.reload()

    def seal(self, data: bytes, label: bytes) -> bytes:
        """``data`` encrypted with the current key; ``label`` (the column) is authenticated."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._follow()
        kid = self.current.encode()
        nonce = os.urandom(NONCE)
        sealed = AESGCM(self.keys[self.current]).encrypt(nonce, data, label)
        return MAGIC + bytes([len(kid)]) + kid + nonce + sealed

    def open(self, blob: bytes, label: bytes) -> bytes:
        """The clear bytes of an encrypted value; ``ContentError`` when it cannot be read."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        kid, nonce, sealed = _parts(blob)
        key = self.keys.get(kid)
        if key is None:
            self.reload()  # rotated meanwhile: the keys file has it now
            key = self.keys.get(kid)
            if key is None:
                raise ContentError(
                    f"content encrypted with key {kid!r}, which is not in the keys file"
                )
        try:
            return AESGCM(key).decrypt(nonce, sealed, label)
        except InvalidTag:
            raise ContentError(
                f"encrypted content (key {kid!r}) fails its integrity check: it was changed"
            ) from None


def _parts(blob: bytes) -> tuple[str, bytes, bytes]:
    size = blob[len(MAGIC)]
    start = len(MAGIC) + 1
    kid = blob[start : start + size].decode()
    nonce = blob[start + size : start + size + NONCE]
    return kid, nonce, blob[start + size + NONCE :]


def key_of(value: bytes | str | None) -> str | None:
    """The key id an encrypted stored value names; None for a clear one."""
    if isinstance(value, str):
        if not value.startswith(TEXT_MAGIC):
            return None
        value = base64.b64decode(value[len(TEXT_MAGIC) :])
    if value is None or not value.startswith(MAGIC):
        return None
    return _parts(value)[0]


_keyring: Keyring | None = None


def configure(keyring: Keyring | None) -> None:
    """The process's keys: from now on content is encrypted when written (if
    ``keyring.encrypt``) and decrypted when read."""
    global _keyring
    _keyring = keyring


def current_keyring() -> Keyring | None:
    return _keyring


def keyring_from_environment() -> Keyring | None:
    """The keys file ``$CROSSWALK_KEYS`` names, if it is set."""
    named = os.environ.get(ENV_VAR)
    return Keyring.load(Path(named).expanduser()) if named else None


def new_key_line(prefix: str = "k") -> str:
    """A fresh key as a keys-file line, its id from the moment it is made."""
    kid = f"{prefix}{datetime.now(UTC):%Y%m%dT%H%M%S}{secrets.token_hex(2)}"
    return f"{kid} {base64.b64encode(secrets.token_bytes(32)).decode()}"


def seal_bytes(value: bytes, label: bytes, keyring: Keyring | None) -> bytes:
    if keyring is not None and keyring.encrypt:
        return keyring.seal(value, label)
    if value.startswith((MAGIC, ESCAPED)):
        return ESCAPED + value
    return value


def open_bytes(value: bytes, label: bytes, keyring: Keyring | None) -> bytes:
    if value.startswith(MAGIC):
        if keyring is None:
            raise ContentError(
                "the store holds encrypted content: give its keys file"
                f" ({ENV_VAR}=FILE, or `store: keys:` in the configuration)"
            )
        return keyring.open(value, label)
    if value.startswith(ESCAPED):
        return value[len(ESCAPED) :]
    return value


class EncryptedBytes(TypeDecorator[bytes]):
    """Binary content encrypted at rest when the process has keys (:func:`configure`)."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label.encode()

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> bytes | None:
        return None if value is None else seal_bytes(bytes(value), self.label, _keyring)

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        return None if value is None else open_bytes(bytes(value), self.label, _keyring)


class EncryptedText(TypeDecorator[str]):
    """Text encrypted at rest (stored as ``cwe1:`` + base64) when the process has keys."""

    impl = Text
    cache_ok = True

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label.encode()

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        keyring = _keyring
        if value is None or not value or keyring is None or not keyring.encrypt:
            return value
        sealed = keyring.seal(value.encode("utf-8"), self.label)
        return TEXT_MAGIC + base64.b64encode(sealed).decode("ascii")

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None or not str(value).startswith(TEXT_MAGIC):
            return value
        sealed = base64.b64decode(str(value)[len(TEXT_MAGIC) :])
        return open_bytes(sealed, self.label, _keyring).decode("utf-8")
