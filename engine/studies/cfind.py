"""The C-FIND client: study-level queries of an archive by DICOM (pynetdicom), Study Root,
over one association kept open for every window of a pull.

Nothing logged here at INFO or above carries patient data (pynetdicom's logging of answers is
switched off).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from engine.studies.index import StudyRecord
from engine.studies.query import ATTRIBUTES, Protocol, PullError, StudyQuery, date_range, log
from engine.studies.settings import ArchiveSettings

__all__ = ["DicomQuery", "dataset_values"]

_PENDING = (0xFF00, 0xFF01)


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
        try:
            context = archive.tls_context()
        except ValueError as error:
            raise self._fail(str(error)) from None
        name = (archive.tls.server_name if archive.tls else None) or archive.dicom_host
        self.assoc = ae.associate(
            archive.dicom_host,
            archive.dicom_port,
            ae_title=archive.called_ae.strip(),
            evt_handlers=[(evt.EVT_ACSE_RECV, self._note_rejection)],
            tls_args=(context, name) if context is not None else None,
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
                + (
                    " (over TLS: is the archive's certificate, or ours, refused?)"
                    if context
                    else ""
                )
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
