"""Message content encrypted at rest: nothing of the patients in the database's bytes, every
reader unchanged, keys rotated while content stays readable, tampering detected."""

from __future__ import annotations

import csv
import os
import re
import shutil
import sqlite3
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
from engine.testing import FakeReceiver, Peer, free_port
from tests.support import (
    ROOT,
    cli_env,
    crosswalk,
    running_pipeline,
    serving,
    stored_messages,
)

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
    counted, lookups = status.stdout.split("Look-ups")
    assert old not in counted, "nothing is under the old key any more"
    assert f"derived from {old}, the first key of the file" in " ".join(lookups.split())
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


# -- the MPI and the study index ---------------------------------------------------------------

SAMPLES = ROOT / "samples"
APPROVE = ["review", "approve", "1", "--yes", "--user", "analyst", "--reason", "same patient"]


def sample_phi() -> set[str]:
    """Names, birth dates (both spellings) and MRNs of the sample MPI export, the PACS's study
    export and the feed."""
    found = feed_phi()
    descriptions = ""
    for name, id_column in (("mpi_export.csv", "mrn"), ("pacs_studies.csv", "patient_id")):
        with (SAMPLES / name).open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                found |= {row[id_column], row["family_name"], row["given_name"]}
                found |= {row["birth_date"], row["birth_date"].replace("-", "")}
                descriptions += row.get("description", "") + "\n"
    # A study's description stays clear (docs/security.md): "CT HEAD W/O CONTRAST TRAUMA" is
    # no patient's name, though one placeholder patient is called TRAUMA.
    return {value for value in found if len(value) >= 4 and value not in descriptions}


#: Digit runs that are no patient's but that an MRN can match by chance, differently each run: a
#: time (ISO, or compact with microseconds), a model weight's long fraction, a hex digest.
_NUMERIC_NOISE = re.compile(
    rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d{6})?|\d{14}\.\d{6}|\d\.\d{6,}(e-?\d+)?|[0-9a-f]{32,}"
)


def without_ciphertext(data: bytes) -> bytes:
    """The database's bytes with the encrypted values and keyed hashes cut out, and the numbers
    that only look like an MRN by chance: what is left is what could be read without the keys."""
    data = re.sub(rb"cwe1:[A-Za-z0-9+/]+=*", b"|", data)
    data = re.sub(rb"cwh1:[A-Za-z0-9_-]{22}", b"|", data)
    return _NUMERIC_NOISE.sub(b"|", data)


def normalised(output: str) -> str:
    """A command's output without what differs from run to run (times, durations, rates)."""
    output = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d)?(\.\d+)?([+-]\d\d:?\d\d|Z)?", "T", output)
    output = re.sub(r"\d+(\.\d+)? ?(s|ms|µs|msg/s|studies/s|rows/s|pairs/s)\b", "D", output)
    output = re.sub(r"\bCW[A-Z0-9]{18}\b", "CONTROL-ID", output)  # a store's own prefix
    return re.sub(r"[ ─━│┃]+", " ", output)


def project_copy(work: Path) -> Path:
    """A folder to run commands in: the project's configuration and mapping tables (copies, to
    add a ``store:`` section to) and its samples."""
    shutil.copytree(ROOT / "routes", work / "routes")
    shutil.copytree(ROOT / "mappings", work / "mappings")
    (work / "samples").symlink_to(SAMPLES)
    return work


def _mpi_drained(env: dict[str, str], cwd: Path) -> bool:
    status = subprocess.run(
        crosswalk("queue", "status"), cwd=cwd, env=env, capture_output=True, text=True
    )
    for line in status.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if cells and cells[0] == "mpi":
            return (cells[2], cells[4]) == ("0", "0")
    return False


def walkthrough(tmp_path: Path, db_url: str, keys: Path | None) -> tuple[dict[str, str], str]:
    """The README's path through the MPI, the feed, the study index, the reconciler and the
    review, run by a real engine and real commands in a copy of the project's configuration
    (with ``store: encrypt_content`` when ``keys`` are given): each command's output, and
    the database URL."""
    work = project_copy(tmp_path / ("encrypted" if keys else "clear"))
    extra = {"CROSSWALK_KEYS": str(keys)} if keys else {}
    if keys:
        (work / "routes" / "store.yaml").write_text("store:\n  encrypt_content: true\n")
    port, pacs = free_port(), FakeReceiver()
    env = cli_env(CROSSWALK_DB=db_url, CROSSWALK_PORT=str(port), PACS_PORT=str(pacs.port), **extra)
    if not keys:
        env.pop(crypto.ENV_VAR, None)
    commands = [
        ["mpi", "import", "samples/mpi_export.csv"],
        ["send", f"127.0.0.1:{port}", "samples/feed_day.hl7"],
        ["mpi", "show", "100990"],
        ["mpi", "show", "100234", "--format", "json"],
        ["mpi", "search", "--name", "smi"],
        ["mpi", "search", "--name", "Kowalski^T"],
        ["mpi", "search", "--birth-date", "1958-03-14"],
        ["studies", "import", "samples/pacs_studies.csv"],
        ["studies", "orphans"],
        ["reconcile", "run"],
        ["reconcile", "export", "--format", "csv"],
        ["review", "list"],
        ["review", "show", "1"],
        APPROVE,
        ["review", "list", "--status", "approved"],
        ["mpi", "show", "100234"],
    ]
    outputs: dict[str, str] = {}
    with serving([], port, work / "engine.log", env=env, cwd=work):
        for command in commands:
            deadline = time.monotonic() + 30
            while True:  # the approved merge's delivery is listed once the PACS answered
                done = subprocess.run(
                    crosswalk(*command), cwd=work, env=env, capture_output=True, text=True
                )
                if "approved" not in command or "delivered" in done.stdout:
                    break
                assert time.monotonic() < deadline, done.stdout
                time.sleep(0.5)
            words = " ".join(command)
            assert done.returncode == 0, f"{words}:\n{done.stdout}\n{done.stderr}"
            outputs[words.replace(str(port), "PORT")] = done.stdout
            if command[0] == "send":
                deadline = time.monotonic() + 60
                while not _mpi_drained(env, work) and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert _mpi_drained(env, work), "the MPI applied the feed"
        assert pacs.received, "the approval's merge reached the PACS"
    pacs.stop()
    return outputs, db_url


def _second_database(db_url: str, tmp_path: Path) -> str:
    """A database for the second run, of the same kind as ``db_url``."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'second.db'}"
    schema = re.search(r"search_path%3D(\w+)", db_url)
    assert schema is not None
    second = schema.group(1) + "_b"
    store = open_store(db_url)
    with store.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {second} CASCADE")
        connection.exec_driver_sql(f"CREATE SCHEMA {second}")
    store.dispose()
    return db_url.replace(f"search_path%3D{schema.group(1)}", f"search_path%3D{second}")


def test_the_mpi_and_study_index_encrypted_answer_as_clear_and_hold_no_patient_data(
    db_url: str, tmp_path: Path
) -> None:
    keys = tmp_path / "content.keys"
    keys.write_text(crypto.new_key_line() + "\n")
    clear, _ = walkthrough(tmp_path, _second_database(db_url, tmp_path), None)
    encrypted, url = walkthrough(tmp_path, db_url, keys)
    for words, output in clear.items():
        assert normalised(encrypted[words]) == normalised(output), words
    assert "ROBERTS" in encrypted["mpi show 100990"] and "TR99002" in encrypted["mpi show 100990"]
    assert "SMITH" in encrypted["mpi search --name smi"]
    assert "proposal 1: approved" in encrypted[" ".join(APPROVE)]
    stored = without_ciphertext(database_bytes(url, tmp_path))
    phi = sample_phi()
    assert {"SMITH", "KOWALSKI", "19580314", "1958-03-14", "100234"} <= phi
    assert [value for value in phi if value.encode() in stored] == []


def test_turning_encryption_on_for_a_clear_mpi_encrypts_and_hashes_it_all(
    db_url: str, tmp_path: Path
) -> None:
    """`keys rotate` on a store written clear: the MPI's, study index's and reconciler's values
    are encrypted, their look-ups hashed, and every command answers as before."""
    work = project_copy(tmp_path / "work")
    env = {k: v for k, v in cli_env(CROSSWALK_DB=db_url).items() if k != crypto.ENV_VAR}

    def run(*command: str) -> str:
        done = subprocess.run(
            crosswalk(*command), cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    run("mpi", "import", "samples/mpi_export.csv")
    run("studies", "import", "samples/pacs_studies.csv")
    run("reconcile", "run")
    shows = [
        ["mpi", "show", "100234"],
        ["mpi", "search", "--name", "lee"],
        ["mpi", "search", "--birth-date", "1958-03-14"],
        ["studies", "orphans"],
        ["reconcile", "export", "--format", "csv"],
        ["review", "show", "1"],
    ]
    before = [normalised(run(*command)) for command in shows]
    keys = tmp_path / "content.keys"
    run("keys", "new", str(keys))
    env[crypto.ENV_VAR] = str(keys)
    (work / "routes" / "store.yaml").write_text("store:\n  encrypt_content: true\n")
    rotated = run("keys", "rotate")
    assert "patient_identifiers.value: 20 look-up value(s) hashed" in rotated, rotated
    assert "studies.patient_id: " in rotated and "patient_keys.key: " in rotated
    assert [normalised(run(*command)) for command in shows] == before
    run("reconcile", "run")  # on the hashed blocking keys: the same proposals
    assert normalised(run("reconcile", "export", "--format", "csv")) == before[4]
    status = run("keys", "status")
    assert " clear " not in normalised(status), status
    if db_url.startswith("sqlite"):  # what is live (freed pages keep old bytes: docs)
        copy = tmp_path / "vacuumed.db"
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as raw:
            raw.execute(f"VACUUM INTO '{copy}'")
        stored = copy.read_bytes()
    else:
        stored = database_bytes(db_url, tmp_path)
    stored = without_ciphertext(stored)
    phi = sample_phi() - feed_phi()
    assert "KOWALSKI" in phi
    assert [value for value in phi if value.encode() in stored] == []
