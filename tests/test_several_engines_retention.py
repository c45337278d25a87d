"""Retention with several engines on one PostgreSQL: only the holder of the pruning lease
prunes; when it dies another engine takes the lease and prunes from where it got to; a batch
fenced by a lease taken over since is refused and removes nothing."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from engine.leases.keeper import Lease
from engine.leases.records import Fence, LeaseLost, acquire, read_leases
from engine.retention.prune import Pruning
from engine.retention.runner import PruneBatch
from engine.retention.settings import Periods, RetentionSettings
from engine.settings import Duration
from engine.store.database import raw_transaction
from engine.store.fastsql import Statements
from engine.store.schema import DeliveryState, MessageStatus
from engine.testing import FakeReceiver
from tests.cluster import Engines
from tests.support import ALL_TO_PACS, config_folder, destination_yaml
from tests.test_retention import ids, put

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

RETENTION = "retention: {metadata: {delivered: 30d}, batch: 10, rate: 200, interval: 200ms}\n"
TTL = 2.0
OLD = 40


def _old_messages(store: Engine) -> set[int]:
    """OLD messages received 40 days ago and delivered: due for pruning."""
    return {put(store, MessageStatus.ROUTED, 40, (DeliveryState.DELIVERED,)) for _ in range(OLD)}


def _pruned(log: str) -> int:
    return sum(int(n) for n in re.findall(r"retention: (\d+) message\(s\) pruned", log))


def _pruning_holder(store: Engine, steady: float = 1.5, timeout: float = 30) -> int:
    """The pid of the engine holding the pruning lease, once the leases stopped moving (the
    engines share the work out as they start)."""
    deadline = time.monotonic() + timeout
    last: object = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        rows = {(r.name, r.holder) for r in read_leases(store) if not r.expired}
        if rows != last:
            last, since = rows, time.monotonic()
        holder = next((h for name, h in rows if name == "retention"), None)
        if holder is not None and time.monotonic() - since >= steady:
            return int(holder.split(":")[-2])
        time.sleep(0.1)
    raise AssertionError(f"the leases did not settle: {last}")


def _wait(condition: object, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_only_the_lease_holder_prunes_and_pruning_moves_on_when_it_dies(
    db_url: str, store: Engine, tmp_path: Path
) -> None:
    pacs = FakeReceiver()
    folder = config_folder(
        tmp_path,
        ALL_TO_PACS,
        endpoints=destination_yaml(pacs.port),
        extra={"retention.yaml": RETENTION},
    )
    try:
        with Engines(folder, db_url, tmp_path, "--lease-ttl", str(TTL)) as engines:
            engines.start(2)
            victim = _pruning_holder(store)
            first = _old_messages(store)
            assert _wait(lambda: not ids(store) & first), "the first old messages were pruned"
            n = [p.pid for p in engines.processes].index(victim)
            assert _wait(lambda: _pruned(engines.log(n)) == OLD), "the pass is logged"
            assert _pruned(engines.log(1 - n)) == 0, "only the holder of the lease prunes"

            os.kill(victim, signal.SIGKILL)
            second = _old_messages(store)
            assert _wait(lambda: not ids(store) & second), "pruning moved to the other engine"
            assert _pruning_holder(store) == engines.processes[1 - n].pid
            assert _wait(lambda: _pruned(engines.log(1 - n)) == OLD)
    finally:
        pacs.stop()


def test_a_batch_fenced_by_a_lease_taken_over_since_prunes_nothing(
    db_url: str, store: Engine
) -> None:
    old = _old_messages(store)
    epoch = acquire(store, "retention", "paused-engine", 0.01)
    assert epoch is not None
    time.sleep(0.05)
    assert acquire(store, "retention", "other-engine", 60) == epoch + 1
    stale = Lease("retention", Fence("retention", "paused-engine", epoch), time.monotonic() + 60)
    pruning = Pruning(RetentionSettings(metadata=Periods(delivered=Duration(30 * 86400))))
    with store.connect() as connection:
        pruning.load(connection)
        batch = pruning.next_batch(connection, pruning.rules[0])
    assert batch is not None
    with pytest.raises(LeaseLost), raw_transaction(store) as cursor:
        PruneBatch(pruning, batch, stale).write(cursor, Statements(store))
    assert old <= ids(store)
