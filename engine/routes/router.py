"""The router: decides the fate of each received message and what each destination gets.

For every route whose source is the message's listener: the filter decides whether the route
takes it (and if not, which condition said no); the route's steps transform a copy; each
destination's own steps transform a further copy; the result is encoded in the message's
character set and becomes a delivery. Routing is a pure function of the message and the
configuration, so ``crosswalk routes test`` runs exactly what the engine runs.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from engine.hl7v2.charset import codec_for
from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.header import HeaderError
from engine.hl7v2.message import Message
from engine.routes.mappings import Mappings
from engine.routes.model import RouteSettings
from engine.routes.steps import StepContext, StepError, run_steps
from engine.store.schema import MessageStatus

DROP = "drop"
_CONTROL_ID = FieldPath("MSH", 10)


@dataclass(frozen=True, slots=True)
class Outbound:
    """What one destination of one route gets."""

    route: str
    destination: str
    message: Message
    payload: bytes
    control_id: str
    partition: int


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """What one route did with the message (per destination once it matched)."""

    route: str
    outcome: Literal["routed", "filtered", "errored", "dropped"]
    detail: str
    destination: str = ""

    def __str__(self) -> str:
        if self.outcome == "routed":
            return f"routed by {self.route} to {self.destination}"
        if self.outcome == "dropped":
            return f"dropped by {self.route}"
        if self.outcome == "filtered":
            return f"filtered by {self.route}: {self.detail}"
        target = f" for {self.destination}" if self.destination else ""
        return f"errored in {self.route}{target}: {self.detail}"

    @property
    def without_values(self) -> str:
        """What happened, naming the route and destination only: details may quote field
        values (PHI), so this is the form that may reach the log."""
        if self.outcome == "errored":
            target = f" for {self.destination}" if self.destination else ""
            return f"errored in {self.route}{target}"
        return f"{self.outcome} by {self.route}"


@dataclass(slots=True)
class Routing:
    """The routing of one message: its status, the reason in words, and the deliveries."""

    status: str
    reason: str
    outcomes: list[RouteOutcome] = field(default_factory=list)
    outbound: list[Outbound] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """The reason without field values, for the log."""
        acted = [o for o in self.outcomes if o.outcome != "filtered"] or self.outcomes
        return "; ".join(o.without_values for o in acted) or self.status

    def delivery_rows(self) -> list[dict[str, object]]:
        """The deliveries to queue, as column values."""
        return [
            {
                "route": out.route,
                "destination": out.destination,
                "partition": out.partition,
                "payload": out.payload,
                "control_id": out.control_id,
            }
            for out in self.outbound
        ]


class Partitioned(Protocol):
    """What the router needs of a destination: how its queue is split (DestinationSettings)."""

    @property
    def partition_by(self) -> FieldPath | None: ...

    @property
    def worker_count(self) -> int: ...


class RoutingConfig(Protocol):
    """What the router needs of the configuration (the assembled EngineConfig is one)."""

    @property
    def routes(self) -> Mapping[str, RouteSettings]: ...

    @property
    def destinations(self) -> Mapping[str, Partitioned]: ...

    @property
    def mappings(self) -> Path: ...

    @property
    def tables(self) -> Mappings | None: ...


class Router:
    """Routes messages with one configuration; build a new Router to change configuration."""

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self.tables = config.tables or Mappings(config.mappings)
        self.context = StepContext(self.tables)
        self._by_listener: dict[str, list[RouteSettings]] = {}
        for route in config.routes.values():
            for source in route.source:
                self._by_listener.setdefault(source, []).append(route)

    def routes_for(self, listener: str) -> list[RouteSettings]:
        return self._by_listener.get(listener, [])

    def route(self, raw: bytes, charset: str | None, listener: str) -> Routing:
        """Route one stored message."""
        codec = codec_for(charset or "") or "utf-8"
        try:
            message = Message.parse(raw.decode(codec))
        except (UnicodeDecodeError, HeaderError) as error:
            return Routing(MessageStatus.ERRORED, f"cannot be read for routing: {error}")
        routes = self.routes_for(listener)
        if not routes:
            return Routing(MessageStatus.FILTERED, f"no route takes messages from {listener}")
        outcomes: list[RouteOutcome] = []
        outbound: list[Outbound] = []
        for route in routes:
            self._apply(route, message, codec, outcomes, outbound)
        return Routing(_status(outcomes), _summary(outcomes), outcomes, outbound)

    def run_route(self, route: RouteSettings, message: Message, codec: str) -> Routing:
        """One route alone, for ``crosswalk routes test``."""
        outcomes: list[RouteOutcome] = []
        outbound: list[Outbound] = []
        self._apply(route, message, codec, outcomes, outbound)
        return Routing(_status(outcomes), _summary(outcomes), outcomes, outbound)

    def _apply(
        self,
        route: RouteSettings,
        message: Message,
        codec: str,
        outcomes: list[RouteOutcome],
        outbound: list[Outbound],
    ) -> None:
        condition = route.filter
        if condition is not None and not condition.test(message):
            where = getattr(condition, "where", "")
            detail = condition.explain(message) + (f" ({where})" if where else "")
            outcomes.append(RouteOutcome(route.name, "filtered", detail))
            return
        # A route without steps changes nothing: its destinations read the message as parsed
        # (a copy per route costs a copy of every segment; the MPI feed's route has none).
        working = message.copy() if route.steps else message
        try:
            run_steps(route.steps, working, self.context)
        except StepError as error:
            outcomes.append(RouteOutcome(route.name, "errored", str(error)))
            return
        for target in route.destinations:
            if target.destination == DROP:
                outcomes.append(RouteOutcome(route.name, "dropped", "", DROP))
                continue
            result = working.copy() if target.steps else working
            try:
                run_steps(target.steps, result, self.context)
                text = result.to_text()
                payload = text.encode(codec)
            except StepError as error:
                outcomes.append(RouteOutcome(route.name, "errored", str(error), target.destination))
                continue
            except UnicodeEncodeError as error:
                bad = text[error.start : error.end]
                outcomes.append(
                    RouteOutcome(
                        route.name,
                        "errored",
                        f"{bad!r} cannot be written in the message's character set ({codec})",
                        target.destination,
                    )
                )
                continue
            settings = self.config.destinations.get(target.destination)
            outbound.append(
                Outbound(
                    route.name,
                    target.destination,
                    result,
                    payload,
                    result.value(_CONTROL_ID),
                    partition_of(result, settings),
                )
            )
            outcomes.append(RouteOutcome(route.name, "routed", "", target.destination))


def partition_of(message: Message, settings: Partitioned | None) -> int:
    """Which of the destination's parallel queues the message joins (stable across restarts)."""
    if settings is None or settings.partition_by is None or settings.worker_count <= 1:
        return 0
    key = message.value(settings.partition_by)
    return zlib.crc32(key.encode("utf-8")) % settings.worker_count


def _status(outcomes: Iterable[RouteOutcome]) -> str:
    kinds = {o.outcome for o in outcomes}
    if "errored" in kinds:
        return MessageStatus.ERRORED
    if "routed" in kinds:
        return MessageStatus.ROUTED
    return MessageStatus.FILTERED


def _summary(outcomes: list[RouteOutcome]) -> str:
    """The reason shown for the message: what happened, or every route's reason for not."""
    acted = [o for o in outcomes if o.outcome != "filtered"]
    return "; ".join(str(o) for o in (acted or outcomes))
