"""Applying a merge to an Orthanc archive through its REST API.

The study is found by its Study Instance UID; a copy carrying the MPI patient's identity is
made with every UID kept (``/studies/{id}/modify``; where Orthanc refuses that — before 1.11.3
it refuses a new PatientID at study level — each instance is modified and stored again); only
once that copy holds every instance of the old one, with the new identity, is the old copy
deleted. Each step can be repeated: a job retried after a crash between two steps finds what is
already done and finishes the rest. Nothing logged here carries patient data.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from engine.errors import CrosswalkError
from engine.merge_targets.job import ArchiveJob, Identity
from engine.merge_targets.settings import MergeTargetSettings

KEPT_UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


class ArchiveUnavailable(CrosswalkError):
    """The archive cannot do it now (down, too slow, failing, refusing the credentials): the job
    stays queued and is tried again."""


class ArchiveRefusal(CrosswalkError):
    """The job cannot be done in this archive as it stands (the study is not there, the archive
    refuses the change): it is set aside with the reason, for an operator."""


@dataclass(frozen=True, slots=True)
class Moved:
    """What a job did: ``changed`` (the study now carries the identity, the old copy deleted) or
    ``already done`` (a retry found it done)."""

    outcome: str
    study: str
    """Orthanc's id of the study carrying the new identity."""
    instances: int


class OrthancClient:
    """The few calls of Orthanc's REST API a merge needs, with errors in words."""

    def __init__(self, settings: MergeTargetSettings) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if settings.username:
            token = f"{settings.username}:{settings.password}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        try:
            self.context: ssl.SSLContext | None = settings.tls_context()
        except ValueError as error:
            raise ArchiveUnavailable(self.where(str(error))) from None

    def where(self, what: str) -> str:
        """``what`` prefixed by which target and archive said it."""
        return f"merge target {self.settings.name!r} (Orthanc {self.base}): {what}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        dicom: bytes | None = None,
        raw: bool = False,
        missing_ok: bool = False,
    ) -> Any:
        """One request: its JSON answer (bytes with ``raw``); None for 404 with ``missing_ok``."""
        headers = dict(self.headers)
        data = None
        if dicom is not None:
            data, headers["Content-Type"] = dicom, "application/dicom"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(
            self.base + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(
                request, timeout=float(self.settings.timeout), context=self.context
            ) as response:
                answer = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404 and missing_ok:
                return None
            raise self._http_error(error, method, path) from None
        except urllib.error.URLError as error:
            reason = getattr(error.reason, "strerror", None) or str(error.reason)
            raise ArchiveUnavailable(self.where(f"cannot connect: {reason}")) from None
        except (TimeoutError, OSError) as error:
            raise ArchiveUnavailable(self.where(f"no answer: {error}")) from None
        if raw:
            return answer
        try:
            return json.loads(answer) if answer.strip() else None
        except ValueError:
            raise ArchiveUnavailable(self.where(f"{method} {path}: answer is not JSON")) from None

    def _http_error(
        self, error: urllib.error.HTTPError, method: str, path: str
    ) -> ArchiveUnavailable | ArchiveRefusal:
        code = error.code
        if code in (401, 403):
            return ArchiveUnavailable(
                self.where(
                    f"HTTP {code} {error.reason}: Orthanc refused the credentials; check"
                    f" review.merge_targets.{self.settings.name}.username and password"
                )
            )
        details = _details(error)
        said = f"{method} {_shape(path)} answered HTTP {code} {error.reason}" + (
            f" ({details})" if details else ""
        )
        if code >= 500 or code in (408, 429):
            return ArchiveUnavailable(self.where(said))
        return ArchiveRefusal(self.where(said))

    def studies(self, study_uid: str) -> list[str]:
        """Orthanc's ids of the studies with this Study Instance UID (one per PatientID)."""
        found = self.call(
            "POST", "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        )
        return [str(one) for one in found or []]

    def patient_tags(self, study: str) -> dict[str, str]:
        """The patient tags every instance of a study shares (a tag they disagree on is left
        out, so the study does not count as carrying it)."""
        shared = self.call("GET", f"/studies/{study}/shared-tags?simplify", missing_ok=True) or {}
        return {key: str(shared[key]) for key in Identity("").tags() if key in shared}

    def instances(self, study: str) -> dict[str, str]:
        """The study's instances: SOP Instance UID → Orthanc's id."""
        found = self.call("GET", f"/studies/{study}/instances", missing_ok=True) or []
        return {str(i["MainDicomTags"].get("SOPInstanceUID", "")): str(i["ID"]) for i in found}

    def modify_study(self, study: str, identity: Identity) -> str:
        """A copy of the study carrying ``identity``, every UID kept; its id."""
        answer = self.call("POST", f"/studies/{study}/modify", _modification(identity))
        return str(answer["ID"])

    def modify_instances(self, study: str, identity: Identity) -> str:
        """The same, one instance at a time (Orthanc before 1.11.3); the copy's id."""
        copy = ""
        for instance in self.instances(study).values():
            dicom = self.call(
                "POST", f"/instances/{instance}/modify", _modification(identity), raw=True
            )
            stored = self.call("POST", "/instances", dicom=dicom) or {}
            copy = str(stored.get("ParentStudy", ""))
        return copy

    def delete_study(self, study: str) -> None:
        self.call("DELETE", f"/studies/{study}", missing_ok=True)


def move_study(client: OrthancClient, job: ArchiveJob) -> Moved:
    """Make the archive's copy of ``job.study_uid`` carry ``job.new``; delete the old copy only
    once the new one holds all its instances. ``ArchiveRefusal`` when it cannot be done."""
    copies = client.studies(job.study_uid)
    if not copies:
        raise ArchiveRefusal(
            client.where(
                "no study with this Study Instance UID; it was deleted or moved, or it is in"
                " another archive (set `archive:` on the merge target)"
            )
        )
    tags = {copy: client.patient_tags(copy) for copy in copies}
    done = [copy for copy in copies if _carries(tags[copy], job.new)]
    sources = [
        copy
        for copy in copies
        if copy not in done and tags[copy].get("PatientID", "") == job.old.patient_id
    ]
    if not sources:
        if done:
            return Moved("already done", done[0], len(client.instances(done[0])))
        raise ArchiveRefusal(
            client.where(
                "the study carries neither the patient id it had when approved nor the MPI"
                " patient's identity: it was changed in the archive since; review it there"
            )
        )
    copy = ""
    for source in sources:
        expected = set(client.instances(source))
        copy = _copy(client, source, job.new)
        _check_copy(client, copy, source, expected, job.new)
    for source in sources:
        if source != copy:
            client.delete_study(source)
    return Moved("changed", copy, len(client.instances(copy)))


def _copy(client: OrthancClient, source: str, identity: Identity) -> str:
    """A copy of the study carrying ``identity``: in one call where Orthanc allows it, else
    image by image. Orthanc before 1.11.3 refuses a new PatientID at study level even with
    ``Force``; later ones refuse it when the patient exists with other patient tags."""
    try:
        return client.modify_study(source, identity)
    except ArchiveRefusal:
        return client.modify_instances(source, identity)


def _check_copy(
    client: OrthancClient, copy: str, source: str, expected: set[str], identity: Identity
) -> None:
    """The copy carries ``identity`` and holds every instance of the source, or an error."""
    if not copy:
        raise ArchiveUnavailable(client.where("the study's copy was not stored; tried again"))
    if not _carries(client.patient_tags(copy), identity):
        if copy == source:
            # Same PatientID: Orthanc keeps the stored instance (OverwriteInstances false).
            raise ArchiveRefusal(
                client.where(
                    "the study already carries the MPI patient's id, and Orthanc keeps its"
                    " stored instances rather than replacing them (OverwriteInstances is"
                    " false), so the other patient tags could not be changed; set"
                    " OverwriteInstances to true in Orthanc and retry (`crosswalk queue retry"
                    f" {client.settings.name}`)"
                )
            )
        raise ArchiveUnavailable(
            client.where("the study's copy does not carry the new identity yet; tried again")
        )
    missing = expected - set(client.instances(copy))
    if missing:
        raise ArchiveUnavailable(
            client.where(
                f"the study's copy lacks {len(missing)} of {len(expected)} instance(s); the old"
                " copy is kept and the copy made again"
            )
        )


def _carries(tags: dict[str, str], identity: Identity) -> bool:
    return all(_plain(tags.get(key, "")) == _plain(value) for key, value in identity.tags().items())


def _plain(value: str) -> str:
    return value.strip().rstrip("^") if value else ""


def _modification(identity: Identity) -> dict[str, Any]:
    # Orthanc asks for Force to replace PatientID and to keep UIDs.
    return {"Replace": identity.tags(), "Keep": KEPT_UIDS, "Force": True}


def _details(error: urllib.error.HTTPError) -> str:
    """Orthanc's own explanation of an error answer (``Details``), if it gave one."""
    try:
        body = json.loads(error.read() or b"{}")
    except (ValueError, OSError):
        return ""
    return (
        str(body.get("Details") or body.get("Message") or "")[:300]
        if isinstance(body, dict)
        else ""
    )


def _shape(path: str) -> str:
    """A request path without its query."""
    return path.split("?", 1)[0]
