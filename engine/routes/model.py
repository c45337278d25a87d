"""Routes: where messages from a listener go, which of them, and what happens on the way."""

from __future__ import annotations

from dataclasses import dataclass

from engine.routes.conditions import Condition
from engine.routes.steps import Step
from engine.settings import Issue, setting


@dataclass(frozen=True)
class RouteTarget:
    """One destination of a route, with transforms of its own."""

    destination: str = setting("A destination's name, or the built-in `drop`.", example="pacs")
    steps: list[Step] = setting(
        "Steps applied for this destination only, after the route's steps.",
        default_factory=list,
    )


@dataclass(frozen=True, kw_only=True)
class RouteSettings:
    """A route: messages from `source` that pass `filter` are transformed by `steps` and sent
    to every destination."""

    name: str = setting("The route's name, from its key under `routes:`.", default="")
    description: str = setting("What the route is for, for the people who read it.", default="")
    source: list[str] = setting("The listener(s) whose messages this route takes.", example="ehr")
    filter: Condition | None = setting(
        "Which messages the route takes (all when absent).",
        default=None,
        example="{type: [ADT^A01, ADT^A08]}",
    )
    steps: list[Step] = setting("Transforms, in order.", default_factory=list)
    destinations: list[RouteTarget] = setting(
        "Where the result goes: names, or {destination: name, steps: [...]}.",
        example="[pacs]",
    )

    def check(self) -> list[Issue]:
        if not self.destinations:
            return [
                Issue("a route needs at least one destination", "use `drop` to discard on purpose")
            ]
        names = [t.destination for t in self.destinations]
        if len(set(names)) != len(names):
            return [Issue("a destination is listed twice", None)]
        return []
