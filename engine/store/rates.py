"""What each route did with the messages of the last few minutes, per minute, read from the
store (so it covers every engine on it): the console dashboard's route rates.

A route *routed* a message it queued a delivery of; it *errored* on one whose routing failed in
it (the message's reason names it: "errored in ROUTE"); it *filtered* the other messages of its
sources that were routed, filtered or errored (by it or the other routes of the source).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, distinct, func, select
from sqlalchemy.orm import Session

from engine.store.schema import Delivery, Message, MessageStatus

WINDOW = timedelta(minutes=5)
"""How far back the rates look."""
_ERRORED_IN = re.compile(r"errored in (\S+?)(?: for \S+)?: ")
_SETTLED = (MessageStatus.ROUTED, MessageStatus.FILTERED, MessageStatus.ERRORED)


@dataclass(frozen=True, slots=True)
class RouteRates:
    """Messages per minute over the window."""

    route: str
    routed: float
    filtered: float
    errored: float


def route_rates(
    engine: Engine,
    sources: Mapping[str, Iterable[str]],
    *,
    window: timedelta = WINDOW,
    now: datetime | None = None,
) -> list[RouteRates]:
    """The rates of each route of ``sources`` (route → the listeners it takes messages from)
    over the ``window`` before ``now``, by the messages received in it."""
    since = (now or datetime.now(UTC)) - window
    recent = Message.received_at >= since
    with Session(engine) as session:
        settled = Counter(
            dict(
                session.execute(
                    select(Message.listener, func.count())
                    .where(recent, Message.status.in_(_SETTLED))
                    .group_by(Message.listener)
                ).all()
            )
        )
        routed = Counter(
            dict(
                session.execute(
                    select(Delivery.route, func.count(distinct(Delivery.message_id)))
                    .join(Message, Message.id == Delivery.message_id)
                    .where(recent)
                    .group_by(Delivery.route)
                ).all()
            )
        )
        errored: Counter[str] = Counter()
        # The reasons are read in Python: they may be encrypted at rest.
        for reason in session.scalars(
            select(Message.status_reason).where(recent, Message.status == MessageStatus.ERRORED)
        ):
            errored.update(set(_ERRORED_IN.findall(reason or "")))
    minutes = window.total_seconds() / 60
    rates = []
    for route, listeners in sources.items():
        seen = sum(settled[listener] for listener in set(listeners))
        filtered = max(seen - routed[route] - errored[route], 0)
        rates.append(
            RouteRates(route, routed[route] / minutes, filtered / minutes, errored[route] / minutes)
        )
    return rates
