"""The shipped sample messages are valid and accepted, in the character sets they declare."""

from __future__ import annotations

from collections import Counter

import hl7 as python_hl7

from engine.hl7v2.ack import read_ack
from engine.hl7v2.charset import codec_for
from engine.hl7v2.check import examine
from engine.hl7v2.message_file import read_message_file
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import Peer
from tests.support import ROOT, running_engine, stored_messages

SAMPLES = sorted((ROOT / "samples").glob("*.hl7"))


def all_messages() -> list[tuple[str, bytes]]:
    found = []
    for path in SAMPLES:
        split = read_message_file(path)
        assert not split.problems, split.problems
        found += [(f"{path.name}:{m.line}", m.payload) for m in split.messages]
    return found


def test_samples_cover_the_radiology_feed() -> None:
    types = {examine(payload).header.message_type for _, payload in all_messages()}  # type: ignore[union-attr]
    for expected in (
        "ADT^A01^ADT_A01",
        "ADT^A04^ADT_A01",
        "ADT^A05^ADT_A05",
        "ADT^A08^ADT_A01",
        "ADT^A31^ADT_A05",
        "ADT^A40^ADT_A39",
        "ADT^A47^ADT_A30",
        "ORM^O01",
        "OMI^O23^OMI_O23",
        "ORU^R01^ORU_R01",
    ):
        assert expected in types


def test_every_sample_passes_the_checks_and_parses() -> None:
    control_ids = Counter()
    for where, payload in all_messages():
        exam = examine(payload)
        assert exam.problem is None, where
        assert exam.header is not None
        control_ids[exam.header.control_id] += 1
        text = payload.decode(codec_for(exam.charset) or "utf-8")
        assert python_hl7.parse(text).segment("MSH"), where
    assert max(control_ids.values()) == 1, "control ids are unique across samples"


def test_latin1_and_utf8_samples_really_use_those_encodings() -> None:
    latin1 = (ROOT / "samples" / "adt_a08_latin1_names.hl7").read_bytes()
    utf8 = (ROOT / "samples" / "adt_a01_utf8_names.hl7").read_bytes()
    assert "NUÑEZ".encode("latin-1") in latin1 and b"NU\xc3\x91EZ" not in latin1
    assert "MÜLLER".encode() in utf8


def test_every_sample_is_accepted_by_the_engine(db_url: str) -> None:
    messages = all_messages()
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        for where, payload in messages:
            reply = read_ack(peer.exchange(payload))
            assert reply.code == "AA", f"{where}: {reply.text} {reply.error}"
        rows = stored_messages(open_store(db_url))
    assert len(rows) == len(messages)
    assert all(r.status in MessageStatus.ACCEPTED for r in rows)
