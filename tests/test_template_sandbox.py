"""Route templates cannot escape their sandbox, and cannot stop the feed.

Escapes (``''.__class__.__mro__``, function globals, includes of files) are refused; a template
that builds a huge string is stopped at its output limit; one that loops for ever is stopped by
the routing timeout. Each time the message is recorded as errored with the reason, and the next
message is routed as usual.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.hl7v2.ack import read_ack
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import FakeReceiver, Peer
from tests.support import Pipeline, adt, config_folder, destination_yaml, stored_messages

ESCAPES = {
    "mro": "{{ ''.__class__.__mro__ }}",
    "globals": "{{ lipsum.__globals__ }}",
    "os": "{{ cycler.__init__.__globals__.os }}",
    "file": "{% include '/etc/passwd' %}",
    "huge value": "{{ 'x' * 10**9 }}",
    "huge output": "{% for i in range(100000) %}{{ 'abcdefghijklmnopq' }}{% endfor %}",
    "for ever": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
}
REASONS = {
    "mro": "unsafe",
    "globals": "unsafe",
    "os": "unsafe",
    "file": "no loader",
    "huge value": "a value over 1048576 characters",
    "huge output": "its output is over 1048576 characters",
    "for ever": "routing took longer than 1s and was stopped",
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_a_hostile_template_errors_its_message_and_the_feed_goes_on(
    tmp_path: Path, case: str
) -> None:
    routes = f"""
routes:
  hostile:
    source: ehr
    filter: {{field: MSH-10, equals: BAD}}
    steps:
      - set: {{field: PID-13, template: "{ESCAPES[case]}"}}
    destinations: [pacs]
  plain:
    source: ehr
    filter: {{field: MSH-10, equals: GOOD}}
    destinations: [pacs]
"""
    pacs = FakeReceiver()
    folder = config_folder(tmp_path, routes, endpoints=destination_yaml(pacs.port))
    db = f"sqlite:///{tmp_path / 'engine.db'}"
    engine = Pipeline(db, folder)
    engine.server.routing_timeout = 1.0
    engine.start()
    try:
        with Peer(engine.port()) as peer:
            assert read_ack(peer.exchange(adt("BAD"))).code == "AA"
            assert read_ack(peer.exchange(adt("GOOD"))).code == "AA"
        assert pacs.wait_for(1, timeout=30)
        store = open_store(db)
        deadline = time.monotonic() + 30
        while any(r.status == MessageStatus.RECEIVED for r in stored_messages(store)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        engine.stop()
        pacs.stop()
    bad, good = stored_messages(store)
    assert bad.status == MessageStatus.ERRORED and REASONS[case] in bad.status_reason
    assert good.status == MessageStatus.ROUTED
    assert pacs.control_ids() == ["GOOD"]
