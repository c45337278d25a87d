"""The text index of stored messages: a search through it finds what the scan finds."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text, update

from engine.console.server import keep_text_index
from engine.store import crypto, messages, text_index
from engine.store.database import open_store
from engine.store.messages import MessageFilter, find_messages
from engine.store.schema import Message, table_of
from tests.support import adt


def _store_messages(store: Engine, payloads: list[bytes]) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "received_at": now - timedelta(minutes=len(payloads) - n),
            "listener": "ehr",
            "peer": "127.0.0.1",
            "raw": raw,
            "size": len(raw),
            "charset": "",
            "message_type": "ADT^A08",
            "message_code": "ADT",
            "trigger_event": "A08",
            "control_id": f"C{n}",
            "dedup_key": f"EHR|C{n}|{now.timestamp()}",
            "status": "routed",
            "status_reason": "",
            "ack": b"",
        }
        for n, raw in enumerate(payloads)
    ]
    with store.begin() as connection:
        connection.execute(insert(table_of(Message)), rows)


def _payloads(count: int) -> list[bytes]:
    names = ["SMITH", "KOWALSKI", 'O"HARA', "MÜLLER"]
    out = []
    for n in range(count):
        family = names[n % len(names)]
        raw = adt(f"C{n}", pid=f"PID|1||{5000 + n}^^^GENHOSP^MR||{family}^JANE||19800304|F")
        out.append(raw if family != "MÜLLER" else raw.decode("utf-8").encode("latin-1"))
    return out


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    # A text found in more than 20,000 messages is searched by reading them; these stores
    # hold a few dozen: more than 20 turns to reading, so both ways are taken below.
    monkeypatch.setattr(messages, "SELECTIVE", 20)
    return open_store(f"sqlite:///{tmp_path / 'crosswalk.db'}")


def _ids(store: Engine, text_: str, *, newest_first: bool = True, limit: int = 50) -> list[int]:
    found = find_messages(store, MessageFilter(text=text_), limit=limit, newest_first=newest_first)
    return [m.id for m in found]


def _indexed(store: Engine) -> int:
    with store.connect() as connection:
        return text_index.reach(connection) or 0


SEARCHES = ["KOWALSKI", "5007", 'O"HARA', "MÜLLER", "ADT", "NOT THERE", "|", "50"]


class TestSearchThroughTheIndex:
    def test_finds_what_the_scan_finds(self, sqlite_store: Engine) -> None:
        """For texts found often, once, never, with quotes, in latin-1, and too short for the
        index, newest and oldest first, the index gives the scan's answer."""
        _store_messages(sqlite_store, _payloads(120))
        scanned = {
            (t, first): _ids(sqlite_store, t, newest_first=first)
            for t in SEARCHES
            for first in (True, False)
        }
        assert text_index.catch_up(sqlite_store, batch=25) == 120
        assert _indexed(sqlite_store) == 120
        for (search, first), expected in scanned.items():
            assert _ids(sqlite_store, search, newest_first=first) == expected, search
        assert scanned[("5007", True)] == [8], "the fixture's MRN 5007 is in one message"
        assert len(scanned[("MÜLLER", True)]) == 30

    def test_finds_what_the_scan_finds_within_times(self, sqlite_store: Engine) -> None:
        """Since, until, and both (the index then reads the window's ids alone)."""
        _store_messages(sqlite_store, _payloads(60))
        now = datetime.now(UTC)
        windows = [
            (now - timedelta(minutes=50), None),
            (None, now - timedelta(minutes=30)),
            (now - timedelta(minutes=45), now - timedelta(minutes=20)),
        ]

        def search(text_: str, since: datetime | None, until: datetime | None) -> list[int]:
            criteria = MessageFilter(text=text_, since=since, until=until)
            return [m.id for m in find_messages(sqlite_store, criteria, limit=50)]

        scanned = {(t, w): search(t, *w) for t in ("KOWALSKI", "ADT", "5007") for w in windows}
        text_index.catch_up(sqlite_store)
        for (text_, window), expected in scanned.items():
            assert search(text_, *window) == expected, (text_, window)
        assert len(scanned[("ADT", windows[2])]) == 25

    def test_messages_newer_than_the_index_are_read(self, sqlite_store: Engine) -> None:
        _store_messages(sqlite_store, _payloads(40))
        assert text_index.catch_up(sqlite_store, most=30) == 30
        assert _indexed(sqlite_store) == 30
        found = _ids(sqlite_store, "KOWALSKI")
        assert found == [n for n in range(40, 0, -1) if (n - 1) % 4 == 1]
        assert _ids(sqlite_store, "KOWALSKI", limit=3) == found[:3]
        assert _ids(sqlite_store, "KOWALSKI", newest_first=False, limit=12) == sorted(found)[:12]

    def test_uses_the_index(self, sqlite_store: Engine) -> None:
        """Text the index does not hold is not found among the messages it covers: the proof
        that the search reads the index rather than every message."""
        _store_messages(sqlite_store, _payloads(10))
        text_index.catch_up(sqlite_store)
        with sqlite_store.begin() as connection:
            connection.execute(text("DELETE FROM message_text WHERE rowid = 2"))
            connection.execute(text("INSERT INTO message_text(rowid, body) VALUES (2, '')"))
        assert 2 not in _ids(sqlite_store, "KOWALSKI")
        assert _ids(sqlite_store, "KOWALSKI") == [10, 6]

    def test_a_text_found_often_is_read_for(self, sqlite_store: Engine) -> None:
        """Past SELECTIVE messages (20 here) the index is not used: reading newest first is
        quicker than gathering every message it names."""
        _store_messages(sqlite_store, _payloads(30))
        text_index.catch_up(sqlite_store)
        with sqlite_store.begin() as connection:
            connection.execute(text("DELETE FROM message_text WHERE rowid = 5"))
            connection.execute(text("INSERT INTO message_text(rowid, body) VALUES (5, '')"))
        assert _ids(sqlite_store, "ADT") == list(range(30, 0, -1))  # 29 in the index: read
        assert _ids(sqlite_store, "KOWALSKI") == [30, 26, 22, 18, 14, 10, 6, 2]  # 8: the index

    def test_purge_drops_deleted_and_emptied_messages(self, sqlite_store: Engine) -> None:
        _store_messages(sqlite_store, _payloads(12))
        text_index.catch_up(sqlite_store)
        messages = table_of(Message)
        with sqlite_store.begin() as connection:
            connection.execute(messages.delete().where(messages.c.id <= 4))
            connection.execute(update(messages).where(messages.c.id == 6).values(raw=b""))
        assert text_index.purge(sqlite_store, step=5) == 5
        with sqlite_store.connect() as connection:
            left = connection.execute(text("SELECT rowid FROM message_text ORDER BY rowid"))
            assert [r[0] for r in left] == [5, 7, 8, 9, 10, 11, 12]
        assert _ids(sqlite_store, "KOWALSKI") == [10]
        assert text_index.purge(sqlite_store) == 0

    def test_no_index_of_encrypted_content(self, sqlite_store: Engine, tmp_path: Path) -> None:
        """Turning content encryption on drops the index (it would hold the content in clear);
        searches then decrypt and read."""
        _store_messages(sqlite_store, _payloads(8))
        text_index.catch_up(sqlite_store)
        keys = tmp_path / "content.keys"
        keys.write_text(crypto.new_key_line() + "\n")
        crypto.configure(crypto.Keyring.load(keys))
        try:
            assert not text_index.usable(sqlite_store)
            assert text_index.catch_up(sqlite_store) == 0
            with sqlite_store.connect() as connection:
                assert text_index.reach(connection) is None
            assert _ids(sqlite_store, "KOWALSKI") == [6, 2]
        finally:
            crypto.configure(None)

    def test_postgresql_keeps_no_index(self, store: Engine) -> None:
        """Every store searches; only SQLite keeps the index."""
        _store_messages(store, _payloads(8))
        indexed = text_index.catch_up(store)
        assert indexed == (8 if store.dialect.name == "sqlite" else 0)
        assert _ids(store, "KOWALSKI")[:1] == [max(_ids(store, "KOWALSKI"))]


def test_the_console_keeps_the_index_current(sqlite_store: Engine) -> None:
    """The console's background thread indexes messages as they come, and stops when told."""
    _store_messages(sqlite_store, _payloads(5))
    stop = threading.Event()
    keeper = threading.Thread(target=keep_text_index, args=(sqlite_store, stop, 0.05))
    keeper.start()
    try:
        _store_messages(sqlite_store, _payloads(3))
        deadline = time.monotonic() + 20
        while _indexed(sqlite_store) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _indexed(sqlite_store) == 8
    finally:
        stop.set()
        keeper.join(10)
    assert not keeper.is_alive()
