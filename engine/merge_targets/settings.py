"""A merge target's settings: one archive, under ``review: merge_targets:``, that an approved
merge changes directly (for a PACS that takes no ADT^A40)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from engine.mllp.tls import ClientTLS, client_context
from engine.settings import Duration, Issue, setting

DICOMWEB_REFUSAL = (
    "kind dicomweb cannot apply a merge: standard DICOMweb (PS3.18) has no service that changes"
    " a stored study's patient (STOW-RS only adds instances, and deleting is not part of the"
    " standard), so a merge done through it could neither replace the study in place nor"
    " remove the old copy safely"
)
DICOMWEB_HINT = (
    "use kind: orthanc for an Orthanc archive, or send the merge as an HL7 ADT^A40 (a route"
    " with source: review) to a PACS that takes one"
)


@dataclass(frozen=True, kw_only=True)
class MergeTargetSettings:
    """An archive an approval changes directly: the study moves to the MPI patient's identity."""

    name: str = setting("The target's name, from its key under `merge_targets:`.", default="")
    kind: Literal["orthanc", "dicomweb"] = setting(
        "`orthanc`: the Orthanc REST API. `dicomweb` is refused with the reason (standard"
        " DICOMweb cannot change a stored study's patient); see docs/review.md.",
        example="orthanc",
    )
    url: str = setting(
        "Base URL of the archive's REST API (Orthanc: the root that answers `/system`).",
        example="${ORTHANC_URL:-http://127.0.0.1:8042}",
    )
    username: str = setting("User for HTTP basic authentication; empty: none.", default="")
    password: str = setting(
        "Its password; keep it out of the file with `${file:/run/secrets/orthanc}`.",
        default="",
        example="${file:/run/secrets/orthanc-password}",
    )
    tls: ClientTLS | None = setting(
        "Whom to trust for an https `url` (and the client certificate, if the archive asks);"
        " without it, the system's CAs.",
        default=None,
    )
    archive: str = setting(
        "Only studies pulled from this archive (its name under `archives:`) are changed here;"
        " empty: every approved study.",
        default="",
        example="main-pacs",
    )
    timeout: Duration = setting(
        "Give up on one request that takes longer than this (a large study's modification is"
        " one request).",
        default=Duration(300),
        example="10m",
    )
    retry_initial: Duration = setting(
        "First wait before trying again when the archive cannot be reached or fails.",
        default=Duration(5),
    )
    retry_max: Duration = setting(
        "Longest wait between tries (the wait doubles).", default=Duration(300)
    )

    def tls_context(self) -> ssl.SSLContext | None:
        """The client context for an https ``url`` (its files read now), else None;
        ``ValueError`` saying why its files cannot be used."""
        if urlsplit(self.url).scheme != "https":
            return None
        try:
            return client_context(self.tls or ClientTLS())
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"its TLS files cannot be used: {error}") from None

    def check(self) -> list[Issue]:
        """Problems with these values."""
        problems: list[Issue] = []
        if self.kind == "dicomweb":
            problems.append(Issue(DICOMWEB_REFUSAL, DICOMWEB_HINT))
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(Issue(f"url {self.url!r} is not an http(s) URL", None))
        elif parts.username is not None:
            problems.append(
                Issue("url must not carry credentials", "use username and password (${file:…})")
            )
        if self.password and not self.username:
            problems.append(Issue("password is set without username", None))
        if self.timeout <= 0:
            problems.append(Issue("timeout must be more than 0", None))
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            problems.append(Issue("retry_initial must be > 0 and at most retry_max", None))
        return problems
