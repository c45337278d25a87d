"""A backup file encrypted with the keys of encryption at rest (AES-256-GCM, the keys file's
current key): the file in chunks, each sealed with its number and whether it is the last as
authenticated data, so that a chunk changed, moved, removed or cut off is refused."""

from __future__ import annotations

import struct
from pathlib import Path

from engine.store.crypto import ContentError, Keyring

MAGIC = b"CROSSWALK-BACKUP-SEALED-1\n"
CHUNK = 4 * 1024 * 1024


def is_sealed(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def _label(index: int, last: bool) -> bytes:
    return b"crosswalk backup chunk %d%s" % (index, b" last" if last else b"")


def seal_file(clear: Path, sealed: Path, keyring: Keyring) -> None:
    """Write ``clear`` encrypted to ``sealed``."""
    with clear.open("rb") as source, sealed.open("wb") as target:
        target.write(MAGIC)
        index = 0
        chunk = source.read(CHUNK)
        while True:
            following = source.read(CHUNK)
            blob = keyring.seal(chunk, _label(index, not following))
            target.write(struct.pack(">I", len(blob)) + blob)
            if not following:
                return
            chunk, index = following, index + 1


def open_file(sealed: Path, clear: Path, keyring: Keyring | None) -> None:
    """Write the clear content of ``sealed`` to ``clear``; ``ContentError`` when it cannot be
    read (no keys, a key missing, a chunk changed, the file cut short)."""
    if keyring is None:
        raise ContentError(
            f"{sealed} is an encrypted backup: give the keys file (CROSSWALK_KEYS=FILE)"
        )
    with sealed.open("rb") as source, clear.open("wb") as target:
        source.read(len(MAGIC))
        index = 0
        while True:
            header = source.read(4)
            if len(header) < 4:
                raise ContentError(f"{sealed} is cut short: its last part is missing")
            blob = source.read(struct.unpack(">I", header)[0])
            try:
                target.write(keyring.open(blob, _label(index, False)))
            except ContentError:
                target.write(keyring.open(blob, _label(index, True)))  # the last chunk
                if source.read(1):
                    raise ContentError(f"{sealed} has data after its last part") from None
                return
            index += 1
