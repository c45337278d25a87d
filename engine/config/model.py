"""The engine's configuration: listeners, destinations, routes and archives."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from engine.config.binding import ByteSize, Duration, setting
from engine.hl7v2.charset import DEFAULT_CHARSET, codec_for
from engine.hl7v2.fieldpath import FieldPath
from engine.reconcile.settings import ReconcilerSettings
from engine.review.settings import SOURCE as REVIEW_SOURCE
from engine.review.settings import ReviewSettings


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

    def check(self) -> list[tuple[str, str | None]]:
        problems: list[tuple[str, str | None]] = []
        if not 1 <= self.port <= 65535:
            problems.append((f"port {self.port} is outside 1-65535", None))
        if self.nak_retries < 0:
            problems.append(("nak_retries cannot be negative", None))
        if not 1 <= self.partitions <= 64:
            problems.append(("partitions must be between 1 and 64", None))
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            problems.append(("retry_initial must be > 0 and at most retry_max", None))
        return problems

    @property
    def worker_count(self) -> int:
        return self.partitions if self.partition_by is not None else 1


_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")
"""Up to 16 printable ASCII characters, no backslash (DICOM AE VR)."""


def parse_study_date(text: str) -> str | None:
    """``YYYYMMDD`` from ``YYYYMMDD`` or ``YYYY-MM-DD``; None if it is not a real date.

    >>> parse_study_date("2024-02-29")
    '20240229'
    """
    try:
        moment = datetime.strptime(text.strip().replace("-", ""), "%Y%m%d")
    except ValueError:
        return None
    return moment.strftime("%Y%m%d")


@dataclass(frozen=True, kw_only=True)
class ArchiveSettings:
    """A PACS whose list of studies `crosswalk studies pull` copies into the study index."""

    name: str = setting("The archive's name, from its key under `archives:`.", default="")
    dicom_host: str = setting(
        "Address of the archive's DICOM (C-FIND) service; empty: no DICOM.",
        default="",
        example="${PACS_HOST:-127.0.0.1}",
    )
    dicom_port: int = setting("Its DICOM port.", default=104, example="${PACS_DICOM_PORT:-4242}")
    called_ae: str = setting(
        "The archive's AE title; required with `dicom_host`.",
        default="",
        example="${PACS_AE:-ORTHANC}",
    )
    calling_ae: str = setting(
        "Crosswalk's AE title, which the archive must allow to query it.", default="CROSSWALK"
    )
    dicomweb_url: str = setting(
        "Base URL of the archive's DICOMweb service (QIDO-RS asks `<url>/studies`);"
        " empty: no DICOMweb.",
        default="",
        example="${PACS_DICOMWEB_URL:-http://127.0.0.1:8042/dicom-web}",
    )
    timeout: Duration = setting(
        "Give up on a connection, an association or an answer that takes longer than this.",
        default=Duration(30),
        example="1m",
    )
    issuer_of_patient_id: str = setting(
        "Issuer recorded for a study whose Issuer of Patient ID (0010,0021) the archive leaves"
        " empty (e.g. the assigning authority of the hospital's MRNs).",
        default="",
        example="HOSP",
    )
    first_study_date: str = setting(
        "Where the first pull (and `--full`) starts, YYYY-MM-DD; empty: ask for every study"
        " at once.",
        default="",
        example="2015-01-01",
    )
    window_days: int = setting(
        "Ask for this many days of studies per query, so no single answer is huge (and a PACS"
        " that caps the number of results is not hit).",
        default=31,
        example="7",
    )
    page_size: int = setting(
        "Studies per QIDO-RS request (`limit`); the next page is asked for with `offset`.",
        default=500,
    )

    def check(self) -> list[tuple[str, str | None]]:
        """Problems with these values, as (message, hint) pairs."""
        problems: list[tuple[str, str | None]] = []
        if not self.dicom_host and not self.dicomweb_url:
            problems.append(
                ("neither dicom_host nor dicomweb_url is set", "give at least one of them")
            )
        if self.dicom_host:
            if not 1 <= self.dicom_port <= 65535:
                problems.append((f"dicom_port {self.dicom_port} is outside 1-65535", None))
            if not self.called_ae:
                problems.append(("called_ae is required with dicom_host", "the PACS' AE title"))
        for key in ("called_ae", "calling_ae"):
            value = getattr(self, key)
            if value and not _AE_TITLE.fullmatch(value.strip()):
                problems.append(
                    (f"{key} {value!r} is not an AE title", "up to 16 ASCII characters, no \\")
                )
        if self.dicomweb_url and urlsplit(self.dicomweb_url).scheme not in ("http", "https"):
            problems.append((f"dicomweb_url {self.dicomweb_url!r} is not an http(s) URL", None))
        if self.first_study_date and parse_study_date(self.first_study_date) is None:
            problems.append(
                (f"first_study_date {self.first_study_date!r} is not a date", "use YYYY-MM-DD")
            )
        if self.timeout <= 0:
            problems.append(("timeout must be more than 0", None))
        if not 1 <= self.window_days <= 36600:
            problems.append(("window_days must be between 1 and 36600", None))
        if not 1 <= self.page_size <= 100000:
            problems.append(("page_size must be between 1 and 100000", None))
        return problems

    @property
    def protocols(self) -> tuple[str, ...]:
        """``dicom`` and/or ``dicomweb``: what this archive is configured for."""
        return tuple(
            protocol
            for protocol, address in (("dicom", self.dicom_host), ("dicomweb", self.dicomweb_url))
            if address
        )

    @property
    def start_date(self) -> str:
        """``first_study_date`` as YYYYMMDD ('' when unset)."""
        return parse_study_date(self.first_study_date) or ""


BUILT_IN_DESTINATIONS = {
    "drop": "keep the message as filtered by this route, send nothing",
    "mpi": "apply ADT and orders to the master patient index",
}
BUILT_IN_SOURCES = {
    REVIEW_SOURCE: "merge messages of proposals approved with `crosswalk review`",
}


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine runs with, merged from the YAML files of a folder."""

    listeners: dict[str, ListenerSettings] = field(default_factory=dict)
    destinations: dict[str, DestinationSettings] = field(default_factory=dict)
    routes: dict[str, Any] = field(default_factory=dict)
    """Route name → :class:`engine.routes.model.RouteSettings`."""
    files: tuple[str, ...] = ()
    mappings: Path = Path("mappings")
    """The folder of mapping tables."""
    tables: Any = field(default=None, compare=False, repr=False)
    """The mapping tables checked while loading (:class:`engine.routes.tables.Tables`)."""
    archives: dict[str, ArchiveSettings] = field(default_factory=dict)
    """PACS whose studies ``studies pull`` copies into the study index."""
    reconciler: ReconcilerSettings = field(default_factory=ReconcilerSettings)
    """How ``reconcile run`` scores orphaned studies (the ``reconciler:`` section)."""
    review: ReviewSettings = field(default_factory=ReviewSettings)
    """What an approved proposal sends to the PACS (the ``review:`` section)."""

    @classmethod
    def default(cls) -> EngineConfig:
        """One listener on 127.0.0.1:2575, used when no configuration folder is given."""
        return cls(listeners={"default": ListenerSettings(name="default")})
