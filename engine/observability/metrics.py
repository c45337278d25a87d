"""The engine's metrics, in Prometheus form.

Two kinds: what the engine counts as it works (messages by listener, status and ACK code; ACK
and commit latency; deliveries by outcome; routing results), fed through :class:`EngineMetrics`'
``observe_*`` methods on the hot path (a dictionary update, no I/O); and what is read at scrape
time, from the running engine's listeners (connections, refusals, timeouts) and from the store
(queue depth and oldest age per destination and partition, routing backlog, proposals, review
decisions), the store part at most once per ``scrape_interval``. Labels are listeners, routes,
destinations, states and codes, never a patient, a control id or anything from a message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from engine.leases.records import EngineRow, queue_lease, queue_of_lease, read_engines
from engine.mllp.listener import ListenerStats
from engine.reconcile.tables import Proposal, ReconcileRun
from engine.review.tables import ReviewDecision
from engine.store.queue import read_controls
from engine.store.schema import Delivery, DeliveryState, Message, MessageStatus, table_of

log = logging.getLogger(__name__)
disable_created_metrics()  # the *_created series double every counter for no use here

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Seconds: the ACK target is 2 ms at p99, a stuck store shows in the last buckets."""


class EngineView(Protocol):
    """What the running engine shows of itself (the pipeline's server is one)."""

    def listener_stats(self) -> Mapping[str, ListenerStats]:
        """Each configured listener's counters (a listener not bound is absent)."""
        ...

    def listener_names(self) -> Sequence[str]:
        """Every configured listener, bound or not."""
        ...

    def destination_names(self) -> Sequence[str]:
        """Every configured destination (the MPI worker included)."""
        ...

    def store_engine(self) -> Engine | None:
        """The store, once open."""
        ...

    def not_ready(self) -> list[str]:
        """Why the engine cannot take messages now (empty: it can), without I/O."""
        ...

    def lease_holder(self) -> str | None:
        """This engine's name in the leases (None: alone on an SQLite store)."""
        ...


@dataclass
class ListenerActivity:
    """A listener's messages since the engine started, for ``crosswalk status``."""

    messages: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    last_message: float | None = None
    """Wall-clock time of the last message answered (seconds since the epoch)."""


@dataclass
class StoreCounts:
    """What the store says, as of ``read_at``."""

    read_at: float = 0.0
    queues: list[QueueState] = field(default_factory=list)
    backlog: int = 0
    backlog_oldest: float | None = None
    runs: dict[str, int] = field(default_factory=dict)
    proposals: dict[tuple[str, str], int] = field(default_factory=dict)
    decisions: dict[tuple[str, bool], int] = field(default_factory=dict)
    engines: list[EngineRow] = field(default_factory=list)
    """The engines sharing the store and their leases (PostgreSQL; empty on SQLite)."""
    error: str = ""
    """Why the store could not be read (the counts are then those of the last good read)."""


@dataclass(frozen=True)
class QueueState:
    """One destination partition's queue, as stored."""

    destination: str
    partition: int
    queued: int
    set_aside: int
    oldest: float | None
    """Age in seconds of the oldest queued delivery."""
    paused: bool
    last_error: str = ""
    """Why the head of the queue is not delivered yet (empty: nothing went wrong)."""
    owner: str = ""
    """The engine holding this partition's lease (several engines; empty: none, or alone)."""


class EngineMetrics:
    """The metrics of one engine process, on a registry of its own."""

    def __init__(self, view: EngineView, scrape_interval: float = 5.0) -> None:
        self.view = view
        self.scrape_interval = scrape_interval
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "crosswalk_messages",
            "Messages received, by listener, how they were stored and the ACK code sent.",
            ["listener", "status", "ack"],
            registry=self.registry,
        )
        self.message_bytes = Counter(
            "crosswalk_message_bytes",
            "Bytes of the messages received.",
            ["listener"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "crosswalk_ack_latency_seconds",
            "From a message's last byte read to its ACK handed to the connection.",
            ["listener"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "crosswalk_commit_latency_seconds",
            "One group commit of the store writer.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_failures = Counter(
            "crosswalk_commit_failures",
            "Group commits that failed (their messages were answered AE, not AA).",
            registry=self.registry,
        )
        self.routed = Counter(
            "crosswalk_routed_messages",
            "Messages routed, by the status routing gave them (routed, filtered, errored).",
            ["status"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "crosswalk_deliveries",
            "Deliveries settled, by destination and outcome (delivered, errored, skipped...).",
            ["destination", "outcome"],
            registry=self.registry,
        )
        self.delivery_failures = Counter(
            "crosswalk_delivery_attempt_failures",
            "Attempts that did not deliver (connection refused, timeout, NAK), by destination.",
            ["destination"],
            registry=self.registry,
        )
        self.activity: dict[str, ListenerActivity] = {}
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self.routing: dict[str, int] = {}
        """Messages routed since the start, by status."""
        self.outcomes: dict[str, dict[str, int]] = {}
        """Deliveries settled since the start, by destination and outcome."""
        self.started = time.time()
        self.admin_url: str | None = None
        """Where this engine's admin endpoint answers, once started (other engines show it)."""
        self._store = StoreCounts()
        self._store_lock = threading.Lock()
        self.registry.register(_Scraped(self))

    # --- fed by the engine, on its event loop ---------------------------------------------

    def observe_message(
        self, listener: str, status: str, ack: str, size: int, seconds: float
    ) -> None:
        """A message stored (or refused) and answered ``ack`` after ``seconds``."""
        key = (listener, status, ack)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per combination
            children = self._children[key] = (
                self.messages.labels(listener, status, ack or "none"),
                self.message_bytes.labels(listener),
                self.ack_latency.labels(listener),
            )
        counted, sized, timed = children
        counted.inc()
        sized.inc(size)
        timed.observe(seconds)
        activity = self.activity.setdefault(listener, ListenerActivity())
        activity.messages += 1
        activity.by_status[status] = activity.by_status.get(status, 0) + 1
        activity.last_message = time.time()

    def observe_commit(self, seconds: float, failed: bool) -> None:
        """One group commit took ``seconds`` (and failed, or not)."""
        self.commit_latency.observe(seconds)
        if failed:
            self.commit_failures.inc()

    def observe_routed(self, status: str) -> None:
        self.routed.labels(status).inc()
        self.routing[status] = self.routing.get(status, 0) + 1

    def observe_delivery(self, destination: str, outcome: str) -> None:
        """A delivery settled (``delivered``, ``errored``…) or an attempt failed (``retry``)."""
        if outcome == "retry":
            self.delivery_failures.labels(destination).inc()
        else:
            self.deliveries.labels(destination, outcome).inc()
        outcomes = self.outcomes.setdefault(destination, {})
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    # --- read at scrape time ---------------------------------------------------------------

    def store_counts(self) -> StoreCounts:
        """The store's counts, read again when older than ``scrape_interval``."""
        with self._store_lock:
            if time.monotonic() - self._store.read_at >= self.scrape_interval:
                self._store = self._read_store(self._store)
            return self._store

    def _read_store(self, last: StoreCounts) -> StoreCounts:
        store = self.view.store_engine()
        if store is None:
            return StoreCounts(read_at=time.monotonic(), error="the store is not open yet")
        try:
            return read_store_counts(store, self.view.destination_names())
        except Exception as error:  # a scrape must answer: say the store is unreadable
            log.warning("metrics: the store could not be read: %s", type(error).__name__)
            return StoreCounts(
                read_at=time.monotonic(),
                queues=last.queues,
                backlog=last.backlog,
                backlog_oldest=last.backlog_oldest,
                runs=last.runs,
                proposals=last.proposals,
                decisions=last.decisions,
                engines=last.engines,
                error=f"the store could not be read: {type(error).__name__}",
            )


def read_store_counts(store: Engine, destinations: Sequence[str]) -> StoreCounts:
    """Queue depth and oldest age per destination partition, the routing backlog, reconcile
    runs, proposals by band and status, review decisions: one short read."""
    deliveries = table_of(Delivery)
    messages = table_of(Message)
    now = datetime.now(UTC)
    counts = StoreCounts(read_at=time.monotonic())
    with store.connect() as connection:
        queued: dict[tuple[str, int], tuple[int, datetime | None]] = {}
        for destination, partition, count, oldest in connection.execute(
            select(
                deliveries.c.destination,
                deliveries.c.partition,
                func.count(),
                func.min(deliveries.c.created_at),
            )
            .where(deliveries.c.state == DeliveryState.QUEUED)
            .group_by(deliveries.c.destination, deliveries.c.partition)
        ):
            queued[(destination, partition)] = (count, oldest)
        aside: dict[str, int] = dict(
            connection.execute(
                select(deliveries.c.destination, func.count())
                .where(deliveries.c.state == DeliveryState.ERRORED)
                .group_by(deliveries.c.destination)
            ).all()
        )
        backlog, oldest_received = connection.execute(
            select(func.count(), func.min(messages.c.received_at)).where(
                messages.c.status == MessageStatus.RECEIVED
            )
        ).one()
        runs = connection.execute(
            select(table_of(ReconcileRun).c.status, func.count()).group_by(
                table_of(ReconcileRun).c.status
            )
        ).all()
        proposals = table_of(Proposal)
        by_band = connection.execute(
            select(proposals.c.band, proposals.c.status, func.count()).group_by(
                proposals.c.band, proposals.c.status
            )
        ).all()
        heads: dict[tuple[str, int], str] = {}
        for destination, partition in queued:
            head = connection.execute(
                select(deliveries.c.last_error)
                .where(
                    deliveries.c.destination == destination,
                    deliveries.c.state == DeliveryState.QUEUED,
                    deliveries.c.partition == partition,
                )
                .order_by(deliveries.c.id)
                .limit(1)
            ).scalar()
            heads[(destination, partition)] = head or ""
        decisions = table_of(ReviewDecision)
        decided = connection.execute(
            select(decisions.c.action, decisions.c.automatic, func.count()).group_by(
                decisions.c.action, decisions.c.automatic
            )
        ).all()
    controls = read_controls(store)
    counts.engines = read_engines(store)
    owners = {lease: e.holder for e in counts.engines for lease in e.leases}
    # several engines: every partition with a lease shows, queued or not
    leased = {part for part in map(queue_of_lease, owners) if part is not None}
    names = set(destinations) | {d for d, _ in queued} | set(aside)
    for name in sorted(names):
        partitions = sorted({p for d, p in queued.keys() | leased if d == name}) or [0]
        for partition in partitions:
            count, oldest = queued.get((name, partition), (0, None))
            counts.queues.append(
                QueueState(
                    destination=name,
                    partition=partition,
                    queued=count,
                    set_aside=aside.get(name, 0) if partition == partitions[0] else 0,
                    oldest=_age(now, oldest),
                    paused=controls[name].paused if name in controls else False,
                    last_error=heads.get((name, partition), ""),
                    owner=owners.get(queue_lease(name, partition), ""),
                )
            )
    counts.backlog = int(backlog)
    counts.backlog_oldest = _age(now, oldest_received)
    counts.runs = {status: int(n) for status, n in runs}
    counts.proposals = {(band, status): int(n) for band, status, n in by_band}
    counts.decisions = {(action, bool(automatic)): int(n) for action, automatic, n in decided}
    return counts


def _age(now: datetime, then: datetime | None) -> float | None:
    if then is None:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


_LISTENER_COUNTERS = (
    ("connections", "crosswalk_listener_connections", "Connections accepted."),
    ("frames", "crosswalk_listener_frames", "MLLP frames read."),
    ("oversize", "crosswalk_listener_oversize_frames", "Frames over max_message_size."),
    ("garbage_bytes", "crosswalk_listener_garbage_bytes", "Bytes outside any MLLP frame."),
    ("truncated_frames", "crosswalk_listener_truncated_frames", "Frames cut off by a close."),
    ("read_timeouts", "crosswalk_listener_read_timeouts", "Connections closed mid-frame."),
    ("idle_timeouts", "crosswalk_listener_idle_timeouts", "Connections closed when idle."),
    ("unanswered", "crosswalk_listener_unanswered", "Messages stored after their sender left."),
    (
        "tls_refused",
        "crosswalk_tls_handshake_failures",
        "TLS handshakes failed or client certificates not allowed.",
    ),
    (
        "refused",
        "crosswalk_connections_refused",
        "Connections closed at once: address not allowed, or over max_connections.",
    ),
)


class _Scraped(Collector):
    """What is read at scrape time: listeners' counters and the store's counts."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # described by collect(): the store is not read at registration

    def collect(self) -> Iterator[Metric]:
        view = self.metrics.view
        stats = view.listener_stats()
        up = GaugeMetricFamily(
            "crosswalk_listener_up", "1 when the listener is bound.", labels=["listener"]
        )
        open_now = GaugeMetricFamily(
            "crosswalk_listener_open_connections", "Connections open now.", labels=["listener"]
        )
        for name in view.listener_names():
            up.add_metric([name], 1.0 if name in stats else 0.0)
        for name, listener in stats.items():
            open_now.add_metric([name], listener.open_connections)
        yield up
        yield open_now
        for attribute, metric, text in _LISTENER_COUNTERS:
            family = CounterMetricFamily(metric, text, labels=["listener"])
            for name, listener in stats.items():
                family.add_metric([name], getattr(listener, attribute))
            yield family
        yield from self._store_metrics(self.metrics.store_counts())

    def _store_metrics(self, counts: StoreCounts) -> Iterator[Metric]:
        labels = ["destination", "partition"]
        depth = GaugeMetricFamily("crosswalk_queue_depth", "Deliveries queued.", labels=labels)
        oldest = GaugeMetricFamily(
            "crosswalk_queue_oldest_age_seconds",
            "Age of the oldest queued delivery (0 when the queue is empty).",
            labels=labels,
        )
        aside = GaugeMetricFamily(
            "crosswalk_queue_set_aside",
            "Deliveries set aside (errored) and waiting for an operator.",
            labels=["destination"],
        )
        paused = GaugeMetricFamily(
            "crosswalk_queue_paused", "1 when an operator paused the queue.", labels=["destination"]
        )
        seen: set[str] = set()
        for queue in counts.queues:
            part = str(queue.partition)
            depth.add_metric([queue.destination, part], queue.queued)
            oldest.add_metric([queue.destination, part], queue.oldest or 0.0)
            if queue.destination not in seen:
                seen.add(queue.destination)
                aside.add_metric([queue.destination], queue.set_aside)
                paused.add_metric([queue.destination], 1.0 if queue.paused else 0.0)
        yield from (depth, oldest, aside, paused)
        yield GaugeMetricFamily(
            "crosswalk_routing_backlog",
            "Messages stored as received and not routed yet.",
            value=counts.backlog,
        )
        yield GaugeMetricFamily(
            "crosswalk_routing_backlog_oldest_age_seconds",
            "Age of the oldest message not routed yet (0 when none).",
            value=counts.backlog_oldest or 0.0,
        )
        runs = CounterMetricFamily(
            "crosswalk_reconcile_runs", "Reconcile runs, by status.", labels=["status"]
        )
        for status, n in sorted(counts.runs.items()):
            runs.add_metric([status], n)
        yield runs
        proposals = GaugeMetricFamily(
            "crosswalk_proposals", "Merge proposals, by band and status.", labels=["band", "status"]
        )
        for (band, status), n in sorted(counts.proposals.items()):
            proposals.add_metric([band, status], n)
        yield proposals
        decisions = CounterMetricFamily(
            "crosswalk_review_decisions",
            "Review decisions, by action, and whether the automatic band made them.",
            labels=["action", "automatic"],
        )
        for (action, automatic), n in sorted(counts.decisions.items()):
            decisions.add_metric([action, "true" if automatic else "false"], n)
        yield decisions
        yield from self._lease_metrics(counts)
        yield GaugeMetricFamily(
            "crosswalk_store_readable",
            "1 when the last read of the store's counts succeeded.",
            value=0.0 if counts.error else 1.0,
        )

    def _lease_metrics(self, counts: StoreCounts) -> Iterator[Metric]:
        """Several engines on one PostgreSQL: how many are alive, and which leases this one
        holds (summed over the engines, each lease is held once). An SQLite store has one
        engine and no leases."""
        me = self.metrics.view.lease_holder()
        yield GaugeMetricFamily(
            "crosswalk_engines_alive",
            "Engines sharing the store whose lease rows are renewed (1 on SQLite).",
            value=1 if me is None else sum(1 for e in counts.engines if e.alive),
        )
        held = GaugeMetricFamily(
            "crosswalk_lease_held", "1 when this engine holds the lease.", labels=["lease"]
        )
        for lease, holder in sorted({(n, e.holder) for e in counts.engines for n in e.leases}):
            held.add_metric([lease], 1.0 if holder == me else 0.0)
        yield held
