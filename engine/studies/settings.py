"""The settings of an archive (a PACS) that `crosswalk studies pull` queries."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from engine.mllp.tls import ClientTLS, client_context
from engine.settings import Duration, Issue, setting

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
    tls: ClientTLS | None = setting(
        "DICOM TLS for the C-FIND association, and whom to trust for an https `dicomweb_url`"
        " (without it, https verifies against the system's CAs); see docs/security.md.",
        default=None,
    )

    def tls_context(self) -> ssl.SSLContext | None:
        """The client context for this archive (its files read now), or None; ``ValueError``
        saying why when its files cannot be used."""
        if self.tls is None:
            return None
        try:
            return client_context(self.tls)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"its TLS files cannot be used: {error}") from None

    def check(self) -> list[Issue]:
        """Problems with these values."""
        problems: list[Issue] = []
        if not self.dicom_host and not self.dicomweb_url:
            problems.append(
                Issue("neither dicom_host nor dicomweb_url is set", "give at least one of them")
            )
        if self.dicom_host:
            if not 1 <= self.dicom_port <= 65535:
                problems.append(Issue(f"dicom_port {self.dicom_port} is outside 1-65535", None))
            if not self.called_ae:
                problems.append(
                    Issue("called_ae is required with dicom_host", "the PACS' AE title")
                )
        for key in ("called_ae", "calling_ae"):
            value = getattr(self, key)
            if value and not _AE_TITLE.fullmatch(value.strip()):
                problems.append(
                    Issue(f"{key} {value!r} is not an AE title", "up to 16 ASCII characters, no \\")
                )
        if self.dicomweb_url and urlsplit(self.dicomweb_url).scheme not in ("http", "https"):
            problems.append(
                Issue(f"dicomweb_url {self.dicomweb_url!r} is not an http(s) URL", None)
            )
        if self.first_study_date and parse_study_date(self.first_study_date) is None:
            problems.append(
                Issue(f"first_study_date {self.first_study_date!r} is not a date", "use YYYY-MM-DD")
            )
        if self.timeout <= 0:
            problems.append(Issue("timeout must be more than 0", None))
        if not 1 <= self.window_days <= 36600:
            problems.append(Issue("window_days must be between 1 and 36600", None))
        if not 1 <= self.page_size <= 100000:
            problems.append(Issue("page_size must be between 1 and 100000", None))
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
