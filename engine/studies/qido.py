"""The QIDO-RS client: study-level queries of an archive by DICOMweb (urllib), page by page.

Nothing logged here at INFO or above carries patient data.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from engine.studies.index import StudyRecord
from engine.studies.query import ATTRIBUTES, Protocol, PullError, StudyQuery, date_range
from engine.studies.settings import ArchiveSettings

__all__ = ["QidoQuery", "json_values"]

_TAGS = dict(ATTRIBUTES)


def json_values(item: dict[str, Any]) -> Callable[[str], list[str]]:
    """``values(keyword)`` over a study in the DICOM JSON model (QIDO-RS answer)."""

    def values(keyword: str) -> list[str]:
        element = item.get(_TAGS[keyword]) or item.get(_TAGS[keyword].lower()) or {}
        result = []
        for value in element.get("Value") or []:
            if isinstance(value, dict):  # PN: {"Alphabetic": ..., "Ideographic": ...}
                value = value.get("Alphabetic", "")
            if value is not None:
                result.append(str(value))
        return result

    return values


class QidoQuery(StudyQuery):
    """QIDO-RS ``GET {dicomweb_url}/studies``, page by page (``limit`` / ``offset``)."""

    protocol: Protocol = "dicomweb"

    def __init__(self, archive: ArchiveSettings) -> None:
        super().__init__(archive)
        parts = urllib.parse.urlsplit(archive.dicomweb_url.rstrip("/"))
        self.headers = {"Accept": "application/dicom+json, application/json"}
        if parts.username is not None:
            # Credentials in the URL (https://user:pass@host/...) become HTTP basic auth.
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            if parts.port is not None:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self.base = urllib.parse.urlunsplit(parts)
        try:
            self.context = archive.tls_context() if parts.scheme == "https" else None
        except ValueError as error:
            raise self._fail(str(error)) from None

    def _fail(self, what: str) -> PullError:
        return PullError(f"archive {self.archive.name!r} (DICOMweb {self.base}): {what}")

    def find(self, low: str, high: str) -> Iterator[StudyRecord]:
        limit = self.archive.page_size
        offset = 0
        while True:
            page = self._get(low, high, limit, offset)
            for item in page:
                if not isinstance(item, dict):
                    self.records_skipped += 1
                    continue
                record = self._record(json_values(item), self.archive.issuer_of_patient_id)
                if record is not None:
                    yield record
            if len(page) < limit:
                return
            offset += len(page)

    def _get(self, low: str, high: str, limit: int, offset: int) -> list[Any]:
        params: list[tuple[str, str | int]] = []
        if low:
            params.append(("StudyDate", date_range(low, high)))
        params += [("includefield", tag) for _, tag in ATTRIBUTES]
        params += [("limit", limit), ("offset", offset)]
        url = f"{self.base}/studies?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(
                request, timeout=float(self.archive.timeout), context=self.context
            ) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise self._fail(f"QIDO-RS answered HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            reason = error.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise self._fail(f"cannot connect: {text}") from None
        except (TimeoutError, OSError) as error:
            raise self._fail(f"no answer: {error}") from None
        if not body.strip():  # 204 No Content: no study matches
            return []
        try:
            page = json.loads(body)
        except ValueError:
            raise self._fail("QIDO-RS answer is not JSON") from None
        if not isinstance(page, list):
            raise self._fail("QIDO-RS answer is not a list of studies")
        return page
