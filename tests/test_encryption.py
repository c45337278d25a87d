"""Message content encrypted at rest: nothing of the patients in the database's bytes, every
reader unchanged, keys rotated while content stays readable, tampering detected."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from engine.hl7v2.ack import read_ack
from engine.hl7v2.message_file import read_message_file
from engine.store import crypto
from engine.store.database import open_store
from engine.store.messages import MessageFilter, find_messages
from engine.testing import FakeReceiver, Peer
from tests.support import ROOT, cli_env, crosswalk, running_pipeline, stored_messages

FEED = read_message_file(ROOT / "samples" / "feed_day.hl7").messages


def feed_phi() -> set[str]:
    """Names, birth dates and identifiers of the feed's patients."""
    found: set[str] = set()
    for message in FEED:
        for segment in message.payload.decode("utf-8", "replace").split("\r"):
            fields = segment.split("|")
            if fields[0] == "PID" and len(fields) > 7:
                found |= set(re.split(r"[\^~&]", fields[3])[:1])
                found |= set(re.split(r"[\^~&]", fields[5])[:2])
                found.add(fields[7][:8])
    return {value for value in found if len(value) >= 4}


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Path]:
    """A keys file, configured for this process (reset afterwards)."""
    path = tmp_path / "content.keys"
    path.write_text(crypto.new_key_line() + "\n")
    crypto.configure(crypto.Keyring.load(path))
    try:
        yield path
    finally:
        crypto.configure(None)


def database_bytes(db_url: str, tmp_path: Path) -> bytes:
    """What someone holding the database (the file, or a dump) would read."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    parts = urlsplit(db_url.replace("+psycopg", ""))
    schema = re.search(r"search_path%3D(\w+)", db_url)
    assert schema is not None
    dump = subprocess.run(
        [
            *("pg_dump", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)),
            *("-U", parts.username or "postgres", "-n", schema.group(1), "test"),
        ],
        capture_output=True,
        check=True,
    )
    return dump.stdout


def test_with_encryption_no_patient_data_is_in_the_database(
    db_url: str, tmp_path: Path, keys: Path
) -> None:
    pacs = FakeReceiver()
    with running_pipeline(db_url, tmp_path, pacs.port) as engine, Peer(engine.port()) as peer:
        for message in FEED:
            assert read_ack(peer.exchange(message.payload)).code == "AA"
        assert pacs.wait_for(len(FEED), timeout=30)
    pacs.stop()
    store = open_store(db_url)
    rows = stored_messages(store)
    assert [r.raw for r in rows] == [m.payload for m in FEED], "read back as received"
    assert pacs.received == [m.payload for m in FEED], "the PACS got clear content"
    smith = find_messages(store, MessageFilter(text="PATEL"))
    assert smith and all(b"PATEL" in m.raw for m in smith), "text search decrypts"
    store.dispose()
    stored = database_bytes(db_url, tmp_path)
    phi = feed_phi()
    assert {"PATEL", "101203", "19840227"} <= phi
    leaked = [value for value in phi if value.encode() in stored]
    assert not leaked


def test_the_commands_read_with_the_keys_and_refuse_without(tmp_path: Path, keys: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    pacs = FakeReceiver()
    with running_pipeline(db, tmp_path, pacs.port) as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(FEED[0].payload)).code == "AA"
    pacs.stop()
    shown = subprocess.run(
        crosswalk("messages", "show", "1", "--db", db),
        capture_output=True,
        text=True,
        env=cli_env(CROSSWALK_KEYS=str(keys)),
    )
    assert shown.returncode == 0 and "PATEL" in shown.stdout
    env = {k: v for k, v in cli_env().items() if k != crypto.ENV_VAR}
    refused = subprocess.run(
        crosswalk("messages", "show", "1", "--db", db), capture_output=True, text=True, env=env
    )
    assert refused.returncode != 0
    assert "encrypted content: give its keys file" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr


def test_rotation_re_encrypts_and_everything_stays_readable(
    db_url: str, tmp_path: Path, keys: Path
) -> None:
    pacs = FakeReceiver()
    with running_pipeline(db_url, tmp_path, pacs.port) as engine, Peer(engine.port()) as peer:
        for message in FEED[:5]:
            assert read_ack(peer.exchange(message.payload)).code == "AA"
        assert pacs.wait_for(5)
        first = crypto.current_keyring()
        assert first is not None
        old = first.current
        env = cli_env(CROSSWALK_KEYS=str(keys))
        rotated = subprocess.run(
            crosswalk("keys", "rotate", "--db", db_url), capture_output=True, text=True, env=env
        )
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        assert "messages.raw: 5 value(s) re-encrypted" in rotated.stdout
        time.sleep(crypto.RECHECK + 0.5)  # the running engine picks up the new key
        for message in FEED[5:8]:
            assert read_ack(peer.exchange(message.payload)).code == "AA"
        assert pacs.wait_for(8)
    pacs.stop()
    status = subprocess.run(
        crosswalk("keys", "status", "--db", db_url), capture_output=True, text=True, env=env
    )
    assert status.returncode == 0
    assert old not in status.stdout, "nothing is under the old key any more"
    assert old in keys.read_text(), "the old key stays in the file"
    store = open_store(db_url)
    assert [r.raw for r in stored_messages(store)] == [m.payload for m in FEED[:8]]
    store.dispose()


def test_a_changed_ciphertext_is_refused_not_returned(tmp_path: Path, keys: Path) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    pacs = FakeReceiver()
    with running_pipeline(db, tmp_path, pacs.port) as engine, Peer(engine.port()) as peer:
        assert read_ack(peer.exchange(FEED[0].payload)).code == "AA"
    pacs.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "t.db") as raw:  # flip the last byte of the sealed message
        (sealed,) = raw.execute("SELECT raw FROM messages").fetchone()
        raw.execute("UPDATE messages SET raw = ?", (sealed[:-1] + bytes([sealed[-1] ^ 1]),))
    store = open_store(db)
    with pytest.raises(crypto.ContentError, match="fails its integrity check"):
        stored_messages(store)
    store.dispose()


def test_without_encryption_a_frame_that_looks_encrypted_is_kept_as_sent(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    tail = bytes(b for b in os.urandom(80) if b not in b"\x0b\x1c\x0d\n")[:40]  # one frame
    hostile = crypto.MAGIC + b"\x02k1" + tail
    pacs = FakeReceiver()
    with running_pipeline(db, tmp_path, pacs.port) as engine, Peer(engine.port()) as peer:
        peer.send(hostile)
        assert read_ack(peer.read()).code == "AR"
    pacs.stop()
    store = open_store(db)
    assert stored_messages(store)[0].raw == hostile
    store.dispose()
