"""Pulling the list of studies from a PACS into the study index: DICOM C-FIND and QIDO-RS.

A pull asks the archive for its studies window by window of study dates (``window_days``), from
where the previous pull of that archive and protocol got to (the newest study date it saw,
kept in ``pull_state``) up to today and beyond. The start is inclusive: the same day may have
gained studies since, and seeing a study again is harmless (the index upserts by UID). Answers
are streamed into the index in batches; each batch is its own transaction, and the pull state
moves on only after a whole window is saved, so an interrupted pull resumes where it stopped.

Nothing logged here at INFO or above carries patient data.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import Engine, select

from engine.store.database import for_writing
from engine.studies.flags import (
    IN_THE_FUTURE,
    date_problem,
    recorded_date,
    recorded_sex,
    study_flags,
)
from engine.studies.index import SaveCounts, StudyRecord, save_studies
from engine.studies.placeholders import Placeholders
from engine.studies.settings import ArchiveSettings
from engine.studies.tables import PullState, Study

log = logging.getLogger(__name__)

Protocol = Literal["dicom", "dicomweb"]
PROTOCOLS: tuple[Protocol, ...] = ("dicom", "dicomweb")

# (keyword, tag) of the study-level attributes asked for, by C-FIND and by QIDO-RS includefield.
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("StudyInstanceUID", "0020000D"),
    ("AccessionNumber", "00080050"),
    ("PatientID", "00100020"),
    ("IssuerOfPatientID", "00100021"),
    ("PatientName", "00100010"),
    ("PatientBirthDate", "00100030"),
    ("PatientSex", "00100040"),
    ("PatientAddress", "00101040"),
    ("PatientTelephoneNumbers", "00102154"),
    ("StudyDate", "00080020"),
    ("ModalitiesInStudy", "00080061"),
    ("StudyDescription", "00081030"),
)
_TAGS = dict(ATTRIBUTES)
_PENDING = (0xFF00, 0xFF01)
_LENGTHS: dict[str, int] = {
    f.name: Study.__table__.c[f.name].type.length  # type: ignore[attr-defined]
    for f in fields(StudyRecord)
}


class PullError(Exception):
    """The archive could not be queried; the message names the archive and its address."""


@dataclass
class PullResult:
    """What one pull of one archive by one protocol did."""

    archive: str
    protocol: Protocol
    since: str
    """First study date asked for (YYYYMMDD); '' when every study was asked for."""
    counts: SaveCounts = field(default_factory=SaveCounts)
    queries: int = 0
    oldest: str = ""
    newest: str = ""
    """Oldest and newest study dates among the studies received ('' if none had one)."""
    skipped: int = 0
    """Answers without a usable Study Instance UID, or with values that could not be read."""
    flagged: int = 0
    """Studies received with implausible values (kept, flagged: :mod:`engine.studies.flags`)."""
    last_study_date: str = ""
    """Where the next incremental pull starts."""


# --- converting answers ---------------------------------------------------------------------


def split_person_name(text: str) -> tuple[str, str, str]:
    """(family, given, middle) of a DICOM PN ``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``.

    Only the first (alphabetic) group of ``alphabetic=ideographic=phonetic`` is used.

    >>> split_person_name("Doe^John^Quincy^^Jr")
    ('Doe', 'John', 'Quincy')
    """
    parts = [p.strip() for p in text.split("=", 1)[0].split("^")]
    parts += [""] * 3
    return parts[0], parts[1], parts[2]


def normalise_date(text: str) -> str:
    """A DA value as the index keeps it: YYYYMMDD (from the old ``YYYY.MM.DD`` too), calendar
    date or not (``19450493`` is kept, and flagged); other short text as recorded; '' when
    empty or too long for the index (:func:`engine.studies.flags.recorded_date`)."""
    return recorded_date(text) or ""


def split_address(text: str) -> tuple[str, str, str, str]:
    """(street, city, state, postal code) of Patient's Address.

    Archives fed by HL7 often keep the PID-11 components (``street^other^city^state^zip``);
    free text goes entirely into the street.
    """
    if "^" not in text:
        return text.strip(), "", "", ""
    parts = [p.strip() for p in text.split("^")] + [""] * 5
    street = ", ".join(p for p in parts[:2] if p)
    return street, parts[2], parts[3], parts[4]


def make_record(values: Callable[[str], list[str]], default_issuer: str) -> StudyRecord | None:
    """A study from ``values(keyword)`` (the attribute's values as text); None without a UID."""

    def first(keyword: str) -> str:
        found = values(keyword)
        return found[0].replace("\x00", "").strip() if found else ""  # no store keeps NUL

    uid = first("StudyInstanceUID")
    if not uid or len(uid) > _LENGTHS["study_uid"]:
        return None
    family, given, middle = split_person_name(first("PatientName"))
    street, city, state, postal_code = split_address(first("PatientAddress"))
    sex = recorded_sex(first("PatientSex")) or ""
    record = {
        "study_uid": uid,
        "accession": first("AccessionNumber"),
        "patient_id": first("PatientID"),
        "issuer": first("IssuerOfPatientID") or default_issuer,
        "family_name": family,
        "given_name": given,
        "middle_name": middle,
        "birth_date": normalise_date(first("PatientBirthDate")),
        "sex": sex,
        "street": street,
        "city": city,
        "state": state,
        "postal_code": postal_code,
        "phone": first("PatientTelephoneNumbers"),
        "study_date": normalise_date(first("StudyDate")),
        "modality": "\\".join(v.strip() for v in values("ModalitiesInStudy") if v.strip()),
        "description": first("StudyDescription"),
    }
    # Cut what would not fit the column (PostgreSQL refuses it); UIDs were checked above.
    return StudyRecord(**{k: v[: _LENGTHS[k]] for k, v in record.items()})


def dataset_values(dataset: Dataset) -> Callable[[str], list[str]]:
    """``values(keyword)`` over a C-FIND answer (decoded with its Specific Character Set)."""

    def values(keyword: str) -> list[str]:
        value = dataset.get(keyword)
        if value is None or value == "":
            return []
        if isinstance(value, MultiValue | list | tuple):
            return [str(v) for v in value]
        return [str(value)]

    return values


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


# --- querying -------------------------------------------------------------------------------


def date_range(low: str, high: str) -> str:
    """A DICOM date range: ``low-high``, ``low-`` (open) or '' (every study)."""
    return f"{low}-{high}" if low else ""


def date_windows(start: str, today: date, days: int) -> list[tuple[str, str]]:
    """Study date windows from ``start`` (YYYYMMDD, '' = from the beginning) on.

    The last window is open-ended, so studies dated after today (a clock off at a modality)
    are not missed; without a start there is one window, which matches studies with no date too.

    >>> date_windows("20240101", date(2024, 2, 15), 31)
    [('20240101', '20240131'), ('20240201', '')]
    """
    if not start:
        return [("", "")]
    windows = []
    low = datetime.strptime(start, "%Y%m%d").date()
    while low + timedelta(days=days - 1) < today:
        high = low + timedelta(days=days - 1)
        windows.append((low.strftime("%Y%m%d"), high.strftime("%Y%m%d")))
        low = high + timedelta(days=1)
    windows.append((low.strftime("%Y%m%d"), ""))
    return windows


class StudyQuery:
    """A connection to an archive that answers study-level queries by date range."""

    protocol: Protocol

    def __init__(self, archive: ArchiveSettings) -> None:
        self.archive = archive
        self.records_skipped = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def find(self, low: str, high: str) -> Iterator[StudyRecord]:
        """The studies dated from ``low`` to ``high`` ('' = open; both '' = every study)."""
        raise NotImplementedError

    def _record(self, values: Callable[[str], list[str]], issuer: str) -> StudyRecord | None:
        try:
            record = make_record(values, issuer)
        except Exception as error:  # a value the library cannot decode: skip that study only
            log.warning("skipped a study whose answer could not be read (%s)", type(error).__name__)
            record = None
        if record is None:
            self.records_skipped += 1
        return record


class DicomQuery(StudyQuery):
    """C-FIND (Study Root, STUDY level) over one association, kept open for every window."""

    protocol: Protocol = "dicom"

    def __init__(self, archive: ArchiveSettings) -> None:
        super().__init__(archive)
        self.address = f"{archive.called_ae}@{archive.dicom_host}:{archive.dicom_port}"
        self.assoc: Any = None
        self._rejection = ""

    def _fail(self, what: str) -> PullError:
        return PullError(f"archive {self.archive.name!r} (DICOM {self.address}): {what}")

    def __enter__(self) -> Self:
        from pynetdicom import AE, _config, evt
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            StudyRootQueryRetrieveInformationModelFind,
        )

        # pynetdicom logs every answer's identifier (names, ids, birth dates) at INFO.
        _config.LOG_RESPONSE_IDENTIFIERS = False
        archive = self.archive
        timeout = float(archive.timeout)
        # Connect once ourselves: pynetdicom only logs why a connection failed.
        try:
            socket.create_connection((archive.dicom_host, archive.dicom_port), timeout).close()
        except OSError as error:
            raise self._fail(f"cannot connect: {error.strerror or error}") from None
        ae = AE(ae_title=archive.calling_ae.strip())
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        self.assoc = ae.associate(
            archive.dicom_host,
            archive.dicom_port,
            ae_title=archive.called_ae.strip(),
            evt_handlers=[(evt.EVT_ACSE_RECV, self._note_rejection)],
        )
        if self.assoc.is_rejected:
            raise self._fail(
                f"association from {archive.calling_ae!r} rejected"
                + (f" ({self._rejection})" if self._rejection else "")
            )
        if not self.assoc.is_established:
            raise self._fail(
                "association aborted by the archive"
                if self.assoc.is_aborted
                else f"no answer to the association request within {timeout:g}s"
            )
        if not self.assoc.accepted_contexts:
            self.assoc.release()
            raise self._fail("the archive does not offer Study Root C-FIND")
        # Requests and answers are small PDUs sent in pieces: without this, Nagle's algorithm
        # and delayed ACKs add tens of milliseconds to every C-FIND.
        sock = getattr(getattr(self.assoc.dul, "socket", None), "socket", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("archive %s: DICOM association established with %s", archive.name, self.address)
        return self

    def _note_rejection(self, event: Any) -> None:
        primitive = event.primitive
        if getattr(primitive, "result", None) in (0x01, 0x02):
            self._rejection = f"{primitive.result_str}: {primitive.reason_str}"

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.assoc is not None and self.assoc.is_established:
            if error is not None:
                self.assoc.abort()  # stops an answer that may still be streaming in
            else:
                self.assoc.release()

    def find(self, low: str, high: str) -> Iterator[StudyRecord]:
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            StudyRootQueryRetrieveInformationModelFind,
        )

        query = Dataset()
        query.SpecificCharacterSet = "ISO_IR 192"
        query.QueryRetrieveLevel = "STUDY"
        for keyword, _ in ATTRIBUTES:
            setattr(query, keyword, "")
        query.StudyDate = date_range(low, high)
        if not self.assoc.is_established:
            raise self._fail("the association was closed by the archive")
        answers = self.assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        for status, identifier in answers:
            if not status:
                raise self._fail(
                    "the association ended before the C-FIND was answered"
                    if not self.assoc.is_established
                    else f"no C-FIND answer within {float(self.archive.timeout):g}s"
                )
            code = int(status.Status)
            if code in _PENDING:
                if identifier is not None:
                    record = self._record(
                        dataset_values(identifier), self.archive.issuer_of_patient_id
                    )
                    if record is not None:
                        yield record
            elif code == 0x0000:
                return
            else:
                comment = str(status.get("ErrorComment", "") or "")
                raise self._fail(
                    f"C-FIND failed with status 0x{code:04X}" + (f": {comment}" if comment else "")
                )


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
            with urllib.request.urlopen(request, timeout=float(self.archive.timeout)) as response:
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


def open_query(archive: ArchiveSettings, protocol: Protocol) -> StudyQuery:
    """The query for ``protocol`` on ``archive`` (use it as a context manager)."""
    return DicomQuery(archive) if protocol == "dicom" else QidoQuery(archive)


# --- pulling --------------------------------------------------------------------------------


def read_pull_state(engine: Engine, archive: str, protocol: str) -> str:
    """The newest study date an earlier pull saw ('' if none)."""
    with engine.connect() as connection:
        found = connection.execute(
            select(PullState.last_study_date).where(
                PullState.archive == archive, PullState.protocol == protocol
            )
        ).scalar()
    return found or ""


def write_pull_state(engine: Engine, archive: str, protocol: str, last_study_date: str) -> None:
    with for_writing(engine).begin() as connection:
        state = PullState.__table__
        values = {"last_study_date": last_study_date, "pulled_at": datetime.now(UTC)}
        done = connection.execute(
            state.update()
            .where(state.c.archive == archive, state.c.protocol == protocol)
            .values(**values)
        )
        if done.rowcount == 0:
            connection.execute(state.insert().values(archive=archive, protocol=protocol, **values))


def pull_studies(
    engine: Engine,
    archive: ArchiveSettings,
    protocol: Protocol,
    *,
    since: str | None = None,
    full: bool = False,
    today: date | None = None,
    batch_size: int = 500,
    reconciler: Placeholders | None = None,
) -> PullResult:
    """Copy ``archive``'s studies into the index by ``protocol``; raise :class:`PullError`.

    The first study date asked for is ``since`` (YYYYMMDD) if given; else, unless ``full``,
    the newest study date the previous pull saw; else the archive's ``first_study_date``.
    Studies with implausible values are kept and counted (``reconciler``: its settings name
    the placeholders flagged).
    """
    day = today or date.today()
    previous = read_pull_state(engine, archive.name, protocol)
    if since is not None:
        start = since
    elif not full and previous:
        start = previous
    else:
        start = archive.start_date
    result = PullResult(archive.name, protocol, start, last_study_date=previous)
    source = f"archive:{archive.name}/{protocol}"
    # A mistyped future date must not become where every later pull starts.
    ceiling = day.strftime("%Y%m%d")

    def tracked(records: Iterator[StudyRecord]) -> Iterator[StudyRecord]:
        for record in records:
            if study_flags(record, reconciler, today=day):
                result.flagged += 1
            # Only a calendar date can say where the next pull starts (a future one: today).
            if record.study_date and date_problem(record.study_date, day) in ("", IN_THE_FUTURE):
                result.oldest = min(result.oldest or record.study_date, record.study_date)
                result.newest = max(result.newest, record.study_date)
            yield record

    with open_query(archive, protocol) as query:
        for low, high in date_windows(start, day, archive.window_days):
            shown = date_range(low, high) or "any date"
            log.info("archive %s (%s): asking for studies dated %s", archive.name, protocol, shown)
            result.queries += 1
            result.counts.add(
                save_studies(engine, tracked(query.find(low, high)), source, batch_size=batch_size)
            )
            reached = min(result.newest, ceiling)
            if reached > result.last_study_date:
                write_pull_state(engine, archive.name, protocol, reached)
                result.last_study_date = reached
        result.skipped = query.records_skipped
    write_pull_state(engine, archive.name, protocol, result.last_study_date)
    if result.skipped:
        log.warning(
            "archive %s (%s): %d answer(s) skipped (no usable Study Instance UID or unreadable)",
            archive.name,
            protocol,
            result.skipped,
        )
    log.info(
        "archive %s (%s): %d created, %d updated, %d unchanged; %d with flagged values",
        archive.name,
        protocol,
        result.counts.created,
        result.counts.updated,
        result.counts.unchanged,
        result.flagged,
    )
    return result
