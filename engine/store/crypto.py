"""Message content encrypted at rest: AES-256-GCM (``cryptography``), each value carrying the id
of its key, so that keys can be rotated while the engine runs.

What is encrypted: the columns declared :class:`EncryptedBytes` or :class:`EncryptedText` (a
message's bytes, its ACKs and status reason; a delivery's payload, the destination's answer and
its last error). Their values are encrypted on the way into the database and decrypted on the
way out, by the column type itself, so every reader (the router, delivery, the CLI, the review)
sees clear content without knowing. A value written before encryption was turned on stays
readable; ``crosswalk keys rotate`` encrypts it with the current key.

Values the store must find by (an identifier, a blocking key, a birth date) cannot be held as
AES-GCM ciphertext, which differs at each write. They are stored as a keyed hash
(:class:`LookupText`: HMAC-SHA-256 cut to 128 bits, ``cwh1:`` + base64): equal values hash
equal, so look-ups and joins work on the hashes, and nothing of the value can be read back
without the key. Where the value must also be shown, an encrypted copy sits beside the hash
(:class:`EncryptedText` with ``companion=True``). The hash key is derived from the *first* key of
the keys file, so rotating the encryption key changes no hash; that first key is never removed.

The keys file holds one key per line, ``ID BASE64(32 bytes)``; the last line is the current key
(new content is encrypted with it); ``#`` lines are comments. Keep it apart from the database
and its backups, readable by the engine's user only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect

from engine.errors import CrosswalkError

__all__ = [
    "ENV_VAR",
    "ContentError",
    "EncryptedBytes",
    "EncryptedText",
    "Keyring",
    "LookupText",
    "configure",
    "current_keyring",
    "encrypting",
    "key_of",
    "lookup",
    "new_key_line",
    "reveal",
]

ENV_VAR = "CROSSWALK_KEYS"
"""Names the keys file when the configuration does not (``store: keys:``)."""
MAGIC = b"\x00\x01CWE1"
"""Starts every encrypted value. No HL7 message starts with NUL; a received frame that does
anyway is stored escaped (:data:`ESCAPED`), so clear and encrypted values never collide."""
ESCAPED = b"\x00\x01CWC1"
TEXT_MAGIC = "cwe1:"
LOOKUP_MAGIC = "cwh1:"
"""Starts every keyed hash (:class:`LookupText`)."""
LOOKUP_DERIVATION = b"crosswalk look-up key v1"
_URLSAFE = bytes.maketrans(b"+/", b"-_")
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
    _ciphers: dict[str, Any] = field(default_factory=dict, repr=False)
    _hashers: dict[bytes, Callable[[str], str]] = field(default_factory=dict, repr=False)
    _sealing: tuple[str, bytes, Any] | None = field(default=None, repr=False)
    """The current key's id, the header of what it seals, its cipher."""

    @property
    def lookup_id(self) -> str:
        """The key the look-up hashes are derived from: the first of the file (rotation adds
        keys at the end, so it never changes)."""
        return next(iter(self.keys))

    def lookup(self, value: str, label: bytes) -> str:
        """The keyed hash of ``value`` in the look-up space ``label``."""
        return self.hasher(label)(value)

    def hasher(self, label: bytes) -> Callable[[str], str]:
        """:meth:`lookup` in the space ``label``, for hashing many values (blocking keys)."""
        found = self._hashers.get(label)
        if found is None:
            found = self._hashers[label] = self._hasher(label)
        return found

    def _hasher(self, label: bytes) -> Callable[[str], str]:
        key = self._ciphers.get("")
        if key is None:  # derived once: HMAC(first key, purpose)
            key = self._ciphers[""] = hmac.digest(
                self.keys[self.lookup_id], LOOKUP_DERIVATION, "sha256"
            )
        prefix, digest, encode = label + b"\x00", hmac.digest, binascii.b2a_base64

        def hashed(value: str) -> str:
            code = encode(digest(key, prefix + value.encode("utf-8"), "sha256")[:16])
            return LOOKUP_MAGIC + code[:22].translate(_URLSAFE).decode()

        return hashed

    def opener(self) -> Callable[[str, bytes], str]:
        """Decrypts the base64 of a sealed text (what follows ``cwe1:``) with its label: the
        fast path for reading many values; anything unusual goes through :meth:`open`."""
        from cryptography.exceptions import InvalidTag

        ciphers, decode, start = self._ciphers, base64.b64decode, len(MAGIC) + 1

        def opened(text: str, label: bytes) -> str:
            blob = decode(text)
            end = start + blob[start - 1]
            cipher = ciphers.get(blob[start:end].decode())
            if cipher is None:
                return self.open(blob, label).decode("utf-8")
            try:
                return cipher.decrypt(blob[end : end + NONCE], blob[end + NONCE :], label).decode()
            except InvalidTag:
                return self.open(blob, label).decode("utf-8")  # raises, naming the key

        return opened

    def _cipher(self, kid: str) -> Any:
        """The AES-GCM object of a key (made once: reading a million values makes it count)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        cipher = self._ciphers.get(kid)
        if cipher is None:
            cipher = self._ciphers[kid] = AESGCM(self.keys[kid])
        return cipher

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
            self._ciphers, self._hashers, self._sealing = {}, {}, None

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
        if time.monotonic() - self._checked >= RECHECK:
            self._follow()
        sealing = self._sealing
        if sealing is None or sealing[0] != self.current:
            kid = self.current.encode()
            sealing = self._sealing = (
                self.current,
                MAGIC + bytes([len(kid)]) + kid,
                self._cipher(self.current),
            )
        nonce = os.urandom(NONCE)
        return sealing[1] + nonce + sealing[2].encrypt(nonce, data, label)

    def open(self, blob: bytes, label: bytes) -> bytes:
        """The clear bytes of an encrypted value; ``ContentError`` when it cannot be read."""
        from cryptography.exceptions import InvalidTag

        kid, nonce, sealed = _parts(blob)
        if kid not in self.keys:
            self.reload()  # rotated meanwhile: the keys file has it now
            if kid not in self.keys:
                raise ContentError(
                    f"content encrypted with key {kid!r}, which is not in the keys file"
                )
        try:
            return self._cipher(kid).decrypt(nonce, sealed, label)
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


def encrypting() -> bool:
    """Whether what is written now is encrypted (and looked-up values hashed)."""
    return _keyring is not None and _keyring.encrypt


def lookup(value: str, label: str) -> str:
    """``value`` as the store holds a looked-up value: its keyed hash while encrypting, else
    itself ('' stays ''; a hash stays as it is, so hashing twice is harmless)."""
    keyring = _keyring
    if not value or keyring is None or not keyring.encrypt or value.startswith(LOOKUP_MAGIC):
        return value
    return keyring.lookup(value, label.encode())


def reveal_rows(rows: Sequence[Any], names: list[str]) -> Sequence[Any]:
    """Rows read on the DBAPI cursor with their :class:`EncryptedText` values decrypted, each
    by the name of its column (the label it was encrypted with); rows as they are when the
    process has no keys."""
    keyring = _keyring
    if keyring is None or not rows:
        return rows
    labels = [name.encode() for name in names]
    magic, size = TEXT_MAGIC, len(TEXT_MAGIC)
    open_text = keyring.opener()
    revealed = []
    for row in rows:
        if any(value.__class__ is str and value.startswith(magic) for value in row):
            row = tuple(
                open_text(value[size:], label)
                if value.__class__ is str and value.startswith(magic)
                else value
                for value, label in zip(row, labels, strict=True)
            )
        revealed.append(row)
    return revealed


def stored_form(column: Any) -> Callable[[str], str]:
    """How ``column`` (a :class:`LookupText`) stores a value, for writes on the DBAPI cursor:
    its keyed hash while encrypting, else the value itself."""
    keyring = _keyring
    if keyring is None or not keyring.encrypt:
        return str
    return keyring.hasher(column.type.label.encode())


def stored_values(column: Any, values: list[str]) -> dict[str, str]:
    """``values`` by the form ``column`` stores them in: their keyed hashes when it is a
    :class:`LookupText` and content is encrypted, else themselves (for queries run on the
    DBAPI cursor, whose answers name the stored form)."""
    if not encrypting() or not isinstance(column.type, LookupText):
        return {value: value for value in values}
    label = column.type.label
    return {lookup(value, label): value for value in values}


def reveal(value: str, label: str) -> str:
    """The clear text of a stored :class:`EncryptedText` value read without its column type
    (on the DBAPI cursor); a clear value as it is."""
    if not value or not value.startswith(TEXT_MAGIC):
        return value
    sealed = base64.b64decode(value[len(TEXT_MAGIC) :])
    return open_bytes(sealed, label.encode(), _keyring).decode("utf-8")


def prefix_of(text: str, size: int) -> str:
    """The first ``size`` characters of ``text``, stripped and upper case; '' if it has fewer
    (what a prefix search hashes)."""
    letters = text.strip().upper()[:size]
    return letters if len(letters) == size else ""


MODE_VAR = "CROSSWALK_KEYS_MODE"
"""``read`` for a child process whose parent reads encrypted content but does not encrypt."""


def keys_for_child() -> dict[str, str]:
    """Environment for a process started to read the store: the keys file in use, and whether
    it encrypts (:func:`keyring_from_environment` in the child)."""
    keyring = _keyring
    if keyring is None or keyring.path is None:
        return {}
    return {ENV_VAR: str(keyring.path), MODE_VAR: "write" if keyring.encrypt else "read"}


def keyring_from_environment() -> Keyring | None:
    """The keys file ``$CROSSWALK_KEYS`` names, if it is set."""
    named = os.environ.get(ENV_VAR)
    if not named:
        return None
    return Keyring.load(Path(named).expanduser(), encrypt=os.environ.get(MODE_VAR) != "read")


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
    """Text encrypted at rest (stored as ``cwe1:`` + base64) when the process has keys.

    ``length``: the most characters of clear text the column takes (the MPI's bounds).
    ``companion``: the encrypted copy of a value stored hashed beside it (:class:`LookupText`),
    NULL while content is not encrypted (the value itself is clear then)."""

    impl = Text
    cache_ok = True

    def __init__(self, label: str, length: int | None = None, *, companion: bool = False) -> None:
        super().__init__()
        self.label = label.encode()
        self.length = length
        self.companion = companion

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        keyring = _keyring
        if value is None or not value or keyring is None or not keyring.encrypt:
            return None if self.companion else value
        sealed = keyring.seal(value.encode("utf-8"), self.label)
        return TEXT_MAGIC + binascii.b2a_base64(sealed, newline=False).decode("ascii")

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None or not str(value).startswith(TEXT_MAGIC):
            return value
        sealed = base64.b64decode(str(value)[len(TEXT_MAGIC) :])
        return open_bytes(sealed, self.label, _keyring).decode("utf-8")


class LookupText(TypeDecorator[str]):
    """A value the store looks up, stored as its keyed hash while content is encrypted
    (:func:`lookup`); comparisons with it hash the other side the same way, so queries and
    joins are written as on clear values. ``companion``: a hashed copy of another column (a birth
    date), NULL while content is not encrypted."""

    impl = String
    cache_ok = True

    def __init__(self, label: str, length: int | None = None, *, companion: bool = False) -> None:
        super().__init__(length)
        self.label = label
        self.label_bytes = label.encode()
        self.companion = companion

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        keyring = _keyring
        encrypting = keyring is not None and keyring.encrypt
        if value is None or (self.companion and not encrypting):
            return None
        if not value or not encrypting or value.startswith(LOOKUP_MAGIC):
            return value
        return keyring.hasher(self.label_bytes)(value)  # type: ignore[union-attr]
