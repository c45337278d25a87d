"""The outside conformance set: HL7 messages written by other projects (../shared/corpus).

Every real message there must be accepted; the few that are deliberately broken must get a
specific answer; nothing may crash the engine. Skips when the corpus folder is not present.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hl7v2.ack import Outcome, ack_codes, read_ack
from engine.hl7v2.check import examine
from engine.hl7v2.message_file import read_message_file
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import Peer
from tests.support import ROOT, adt, running_engine, stored_messages

CORPUS = ROOT.parent / "shared" / "corpus"

# (file, first line of the message) -> the ERR code (table 0357) of its deliberate defect
BROKEN = {
    ("hapi/messages.txt", 26): "102",  # MSH-2 has three encoding characters: '^~}'
    ("hapi/example_oml_o21.hl7", 138): "101",  # no MSH-10 (and no MSH-7)
    ("hapi/example_oml_o21.hl7", 154): "101",  # no MSH-10 (and no MSH-7)
}


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".hl7", ".txt"))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present")
def test_every_corpus_message_is_accepted_or_refused_specifically(db_url: str) -> None:
    """All messages of all corpus files over one connection; then the engine still answers."""
    expected: list[tuple[str, int, str]] = []
    with running_engine(db_url, charset="UNICODE UTF-8") as engine, Peer(engine.port()) as peer:
        for path in corpus_files():
            name = path.relative_to(CORPUS).as_posix()
            split = read_message_file(path)
            assert not split.problems, split.problems
            for message in split.messages:
                defect = BROKEN.get((name, message.line))
                where = f"{name}:{message.line}"
                peer.send(message.payload)
                if defect is not None:
                    reply = read_ack(peer.read())
                    assert reply.code == "AR", where
                    assert defect in reply.error, f"{where}: {reply.error}"
                    expected.append((name, message.line, reply.code))
                    continue
                # Some corpus messages ask for enhanced-mode ACKs (MSH-15/16): CA, then AA.
                wanted = ack_codes(examine(message.payload).header, Outcome.ACCEPTED)
                codes = [read_ack(peer.read()).code for _ in wanted]
                assert codes == wanted, f"{where}: {codes}"
                expected.append((name, message.line, " ".join(codes)))
        assert read_ack(peer.exchange(adt("AFTER-CORPUS"))).code == "AA"
        rows = stored_messages(open_store(db_url))
    assert len(expected) > 40
    assert len(rows) == len(expected) + 1, "every corpus message is kept, refused ones too"
    rejected = sum(1 for r in rows if r.status == MessageStatus.REJECTED)
    assert rejected == len(BROKEN)
