"""The settings of the running engine's ends: listeners (MLLP in) and destinations (MLLP out)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from engine.audit.settings import AuditSettings
from engine.hl7v2.charset import DEFAULT_CHARSET, codec_for
from engine.hl7v2.fieldpath import FieldPath
from engine.mllp.tls import ClientTLS, ListenerTLS
from engine.observability.settings import AdminSettings
from engine.retention.settings import RetentionSettings
from engine.review.settings import ReviewSettings
from engine.routes.router import RoutingConfig
from engine.settings import ByteSize, Duration, Issue, Problem, setting
from engine.studies.settings import ArchiveSettings


@dataclass(frozen=True)
class ListenerSettings:
    """An MLLP port the engine accepts HL7 messages on."""

    name: str = setting("The listener's name, from its key under `listeners:`.", default="")
    host: str = setting(
        "Address to bind; 0.0.0.0 accepts connections from other machines.",
        default="127.0.0.1",
        example="0.0.0.0",
    )
    port: int = setting("TCP port.", default=2575, example="${CROSSWALK_PORT:-2575}")
    charset: str = setting(
        "Character set of messages whose MSH-18 is empty (HL7 table 0211 name or codec name).",
        default=DEFAULT_CHARSET,
        example="8859/1",
    )
    strict_segments: bool = setting(
        "Reject messages whose segments end with LF or CRLF instead of normalising them.",
        default=False,
    )
    max_message_size: ByteSize = setting(
        "Largest message accepted; a larger one is refused with a NAK naming the limit.",
        default=ByteSize(1024 * 1024),
        example="4MiB",
    )
    idle_timeout: Duration = setting(
        "Close a connection that sends nothing for this long (0: never).",
        default=Duration(3600),
        example="10m",
    )
    read_timeout: Duration = setting(
        "Drop a peer that stalls this long in the middle of a message.",
        default=Duration(30),
        example="30s",
    )
    duplicate_window: Duration = setting(
        "A message with the same MSH-3, MSH-4 and MSH-10 as one accepted within this window is"
        " answered AA, kept as a duplicate and not processed again (0: off).",
        default=Duration(86400),
        example="24h",
    )
    tls: ListenerTLS | None = setting(
        "Speak TLS (MLLP over TLS, from the first byte); see docs/security.md.", default=None
    )
    allow: list[str] = setting(
        "Addresses that may connect (IPv4 and IPv6 addresses or CIDR networks); anyone else is"
        " closed at once, logged once a minute per address. Empty: any address.",
        default_factory=list,
        example="[10.20.0.0/16, 10.30.4.17, 'fd00:20::/64']",
    )
    max_connections: int = setting(
        "Connections open at once. When all are taken, a new connection closes the oldest one"
        " that has not completed a message (idle or trickling); if every connection has"
        " completed one, the new one is closed at once. With `allow`, strangers never take the"
        " senders' places.",
        default=64,
    )
    rejections_per_second: float = setting(
        "Messages a connection may have rejected (AR/AE for what it sent) a second before its"
        " next message waits its turn: every rejected frame is still stored and answered, but"
        " a sender of garbage cannot take the store and the event loop from the senders that"
        " work. 0: no limit.",
        default=20.0,
    )

    def check(self) -> list[Issue]:
        """Problems with these values."""
        problems: list[Issue] = []
        if not 0 <= self.port <= 65535:
            problems.append(Issue(f"port {self.port} is outside 0-65535", None))
        if codec_for(self.charset) is None:
            problems.append(
                Issue(f"charset {self.charset!r} is unknown", "use an HL7 name such as 8859/1")
            )
        if self.max_message_size < 1024:
            problems.append(Issue("max_message_size must be at least 1KiB", None))
        if self.read_timeout <= 0:
            problems.append(Issue("read_timeout must be more than 0", None))
        if self.max_connections < 1:
            problems.append(Issue("max_connections must be at least 1"))
        if self.rejections_per_second < 0:
            problems.append(Issue("rejections_per_second must be 0 (no limit) or more"))
        for entry in self.allow:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                hint = "an address (10.0.0.5) or a network (10.0.0.0/24)"
                problems.append(Issue(f"allow: {entry!r} is not an address or a network", hint))
        return problems


@dataclass(frozen=True, kw_only=True)
class DestinationSettings:
    """An MLLP receiver (the PACS) that routes send messages to, through a durable queue."""

    name: str = setting("The destination's name, from its key under `destinations:`.", default="")
    host: str = setting("Address of the receiver.", example="${PACS_HOST:-127.0.0.1}")
    port: int = setting("Its MLLP port.", example="${PACS_PORT:-2576}")
    connect_timeout: Duration = setting(
        "Give up a connection attempt after this long (then retry).", default=Duration(10)
    )
    ack_timeout: Duration = setting(
        "Wait this long for the ACK of a message sent (then reconnect and resend it).",
        default=Duration(30),
    )
    retry_initial: Duration = setting(
        "First wait after a connection error or a missing ACK; doubles on each failure.",
        default=Duration(1),
    )
    retry_max: Duration = setting(
        "The longest wait between retries.", default=Duration(300), example="5m"
    )
    nak_retries: int = setting(
        "How many times to resend a message the receiver answered AE or AR.", default=3
    )
    on_nak: Literal["stop", "set_aside"] = setting(
        "After the retries: stop the queue until an operator acts (safe for ADT: nothing"
        " later overtakes it), or set the message aside as errored and go on.",
        default="stop",
    )
    partition_by: FieldPath | None = setting(
        "Send in parallel over several connections, keeping the order of messages with the"
        " same value of this field (e.g. the patient's MRN).",
        default=None,
        example="PID-3.1",
    )
    partitions: int = setting("Parallel connections when partition_by is set.", default=4)
    tls: ClientTLS | None = setting(
        "Speak TLS to the destination, verifying its certificate and name; see docs/security.md.",
        default=None,
    )

    def check(self) -> list[Issue]:
        problems: list[Issue] = []
        if not 1 <= self.port <= 65535:
            problems.append(Issue(f"port {self.port} is outside 1-65535", None))
        if self.nak_retries < 0:
            problems.append(Issue("nak_retries cannot be negative", None))
        if not 1 <= self.partitions <= 64:
            problems.append(Issue("partitions must be between 1 and 64", None))
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            problems.append(Issue("retry_initial must be > 0 and at most retry_max", None))
        return problems

    @property
    def worker_count(self) -> int:
        return self.partitions if self.partition_by is not None else 1


class PipelineConfig(RoutingConfig, Protocol):
    """What the running engine needs of the configuration: its listeners and destinations, and
    what the router needs. The assembled :class:`engine.config.model.EngineConfig` is one; the
    engine is given it (and a way to load a new one), it never assembles one itself."""

    @property
    def listeners(self) -> Mapping[str, ListenerSettings]: ...

    @property
    def destinations(self) -> Mapping[str, DestinationSettings]: ...

    @property
    def audit(self) -> AuditSettings: ...

    @property
    def review(self) -> ReviewSettings:
        """The ``review:`` section: its merge targets have queues the engine works."""
        ...

    @property
    def admin(self) -> AdminSettings | None:
        """The admin HTTP endpoint (None: not served)."""
        ...

    @property
    def retention(self) -> RetentionSettings | None:
        """How long messages are kept (None: for ever); read at start."""
        ...

    @property
    def archives(self) -> Mapping[str, ArchiveSettings]: ...

    @property
    def warnings(self) -> Sequence[Problem]:
        """What is allowed but almost surely a mistake, with its file and line (logged)."""
        ...


LoadConfig = Callable[[Path], PipelineConfig]
"""Reads and checks a configuration folder (``engine.config.loader.load_config``); raises
``ConfigError`` listing every problem."""
