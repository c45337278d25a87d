"""The engine's configuration: listeners (and, as they arrive, destinations and routes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config.binding import ByteSize, Duration, setting
from engine.hl7v2.charset import DEFAULT_CHARSET, codec_for


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

    def check(self) -> list[tuple[str, str | None]]:
        """Problems with these values, as (message, hint) pairs."""
        problems: list[tuple[str, str | None]] = []
        if not 0 <= self.port <= 65535:
            problems.append((f"port {self.port} is outside 0-65535", None))
        if codec_for(self.charset) is None:
            problems.append(
                (f"charset {self.charset!r} is unknown", "use an HL7 name such as 8859/1")
            )
        if self.max_message_size < 1024:
            problems.append(("max_message_size must be at least 1KiB", None))
        if self.read_timeout <= 0:
            problems.append(("read_timeout must be more than 0", None))
        return problems


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine runs with, merged from the YAML files of a folder."""

    listeners: dict[str, ListenerSettings] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    @classmethod
    def default(cls) -> EngineConfig:
        """One listener on 127.0.0.1:2575, used when no configuration folder is given."""
        return cls(listeners={"default": ListenerSettings(name="default")})
