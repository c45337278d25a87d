"""The ``retention:`` section: how long messages are kept, by what became of them.

```yaml
retention:
  content:  {delivered: 30d, filtered: 7d, rejected: 90d, duplicate: 7d}
  metadata: {delivered: 400d, filtered: 30d, rejected: 400d, duplicate: 30d}
```
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from engine.settings import Duration, Issue, setting

CATEGORIES = ("delivered", "filtered", "rejected", "duplicate", "errored")
"""What became of a message, as retention sees it (see :class:`Periods`)."""


@dataclass(frozen=True, kw_only=True, repr=False)
class Periods:
    """How long to keep, by what became of the message; a category left out is kept for ever."""

    delivered: Duration | None = setting(
        "Routed, and every delivery of it delivered (a message with a delivery still queued is"
        " never pruned; one set aside only with `prune_set_aside`).",
        default=None,
        example="30d",
    )
    filtered: Duration | None = setting("No route sent it anywhere.", default=None)
    rejected: Duration | None = setting("Refused at intake (answered AE/AR).", default=None)
    duplicate: Duration | None = setting("A copy of a message received before.", default=None)
    errored: Duration | None = setting(
        "A route failed on it (kept for ever by default: someone should look at it).",
        default=None,
    )

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{name}: {seconds:g}s" for name, seconds in self.items()) + "}"

    def items(self) -> list[tuple[str, float]]:
        """(category, seconds) of each category with a period."""
        return [
            (f.name, float(getattr(self, f.name)))
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    """How long the store keeps messages, and how fast the engine prunes them. Content is the
    message's bytes, its ACK and each delivery's payload and answer; metadata the rest of its
    row (times, MSH fields, status) and its deliveries. Off unless the configuration has a
    ``retention:`` section."""

    enabled: bool = setting(
        "Prune inside the engine (a `retention:` section turns it on; false leaves pruning to"
        " `crosswalk prune`).",
        default=True,
    )
    content: Periods = setting(
        "Keep message content this long after receipt, by category.",
        default_factory=Periods,
        example={"delivered": "30d", "filtered": "7d"},
    )
    metadata: Periods = setting(
        "Keep the message's record (and its deliveries) this long after receipt, by category;"
        " at least as long as its content.",
        default_factory=Periods,
        example={"delivered": "400d"},
    )
    prune_set_aside: bool = setting(
        "Also prune messages with a delivery set aside (errored) after the destination refused"
        " it. Deliveries still queued are never pruned: the engine acknowledged those messages"
        " and still owes them to their destination.",
        default=False,
    )
    batch: int = setting(
        "Messages pruned per transaction (each batch shares a commit with received messages:"
        " about 7 ms for 100 on an SQLite store of millions).",
        default=100,
    )
    rate: int = setting("At most this many messages pruned per second.", default=1000)
    interval: Duration = setting(
        "Once caught up, look for messages to prune again this often.", default=Duration(60.0)
    )
    vacuum: bool = setting(
        "SQLite: give freed pages beyond a reserve of 32 MiB back to the file system after each"
        " batch (incremental vacuum), so the file shrinks as well as stops growing.",
        default=True,
    )

    def check(self) -> list[Issue]:
        problems = []
        if self.batch < 1:
            problems.append(Issue("batch must be at least 1"))
        if self.rate < 1:
            problems.append(Issue("rate must be at least 1 message a second"))
        if float(self.interval) <= 0:
            problems.append(Issue("interval must be more than 0"))
        for kind in ("content", "metadata"):
            for category, seconds in getattr(self, kind).items():
                if seconds <= 0:
                    problems.append(Issue(f"{kind}.{category} must be more than 0"))
        content = dict(self.content.items())
        for category, seconds in self.metadata.items():
            if category in content and seconds < content[category]:
                problems.append(
                    Issue(
                        f"metadata.{category} is shorter than content.{category}",
                        "the record goes with its content; keep metadata at least as long",
                    )
                )
        return problems
