"""A real Orthanc (with its DICOMweb plugin) on loopback for tests, and DICOM files to fill it.

Orthanc runs in a temporary folder with free ports for HTTP and DICOM; tests skip when the
binary or the plugin is not installed (``apt-get install orthanc orthanc-dicomweb``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from engine.testing import free_port

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BINARY_CANDIDATES = ("Orthanc", "/usr/sbin/Orthanc", "/usr/bin/Orthanc")
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def _binary() -> str | None:
    for candidate in BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _plugin() -> str | None:
    return next((p for p in PLUGIN_CANDIDATES if Path(p).is_file()), None)


class Orthanc:
    """An Orthanc process; ``stop()`` ends it (terminate, then kill if it lingers)."""

    AE_TITLE = "ORTHANC"

    def __init__(
        self,
        folder: Path,
        *,
        tls: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        **settings: Any,
    ) -> None:
        """``tls``: a client context trusting Orthanc's certificate, when ``settings`` turn
        on its HTTPS (``SslEnabled``); the helper's own requests use it. ``credentials``: the
        one user (name, password) its REST API then requires; the helper's requests send it."""
        self.tls = tls
        self.headers: dict[str, str] = {}
        if credentials is not None:
            user, password = credentials
            settings = {
                "AuthenticationEnabled": True,
                "RegisteredUsers": {user: password},
                **settings,
            }
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        binary, plugin = _binary(), _plugin()
        if binary is None:
            pytest.skip("Orthanc is not installed (apt-get install orthanc)")
        if plugin is None:
            pytest.skip("the Orthanc DICOMweb plugin is not installed (orthanc-dicomweb)")
        self.folder = folder
        self.http_port = int(settings.pop("HttpPort", 0)) or free_port()
        self.dicom_port = free_port()
        config = {
            "Name": "crosswalk-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.AE_TITLE,
            "DicomAlwaysAllowFind": True,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpDescribeErrors": True,
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **settings,
        }
        (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        self._log = (folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [binary, str(folder / "orthanc.json")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env={**os.environ, "LANG": "C.UTF-8"},
        )
        try:
            self._wait_ready(30.0)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(
                    self.request("/system"), timeout=1, context=self.tls
                ) as response:
                    if response.status == 200:
                        # /system answers before the DICOM server is listening.
                        self._wait_dicom(deadline)
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {timeout}s: {self.log()}")

    def _wait_dicom(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("Orthanc's DICOM port never opened")

    def request(
        self, path: str, data: bytes | None = None, method: str | None = None, **headers: str
    ) -> urllib.request.Request:
        """A request to Orthanc's REST API carrying the helper's credentials."""
        return urllib.request.Request(
            f"{self.url}{path}", data=data, headers={**self.headers, **headers}, method=method
        )

    def log(self) -> str:
        self._log.flush()
        return (self.folder / "orthanc.log").read_text(encoding="utf-8", errors="replace")[-2000:]

    def upload(self, dataset: Dataset) -> str:
        """Store ``dataset`` (POST /instances); returns Orthanc's id of the study."""
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        request = self.request(
            "/instances", buffer.getvalue(), "POST", **{"Content-Type": "application/dicom"}
        )
        with urllib.request.urlopen(request, timeout=10, context=self.tls) as response:
            answer: dict[str, Any] = json.load(response)
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc did not store the instance: {answer}")
        return str(answer["ParentStudy"])

    def delete_study(self, orthanc_id: str) -> None:
        """Remove a study (by the id :meth:`upload` returned)."""
        request = self.request(f"/studies/{orthanc_id}", method="DELETE")
        with urllib.request.urlopen(request, timeout=10, context=self.tls):
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


@contextlib.contextmanager
def running_orthanc(folder: Path, **settings: Any) -> Iterator[Orthanc]:
    """Orthanc in ``folder`` for the duration of the block; ``settings`` add to its config."""
    orthanc = Orthanc(folder, **settings)
    try:
        yield orthanc
    finally:
        orthanc.stop()


def study_instance(
    *,
    study_uid: str | None = None,
    patient_id: str,
    patient_name: str,
    study_date: str,
    modality: str = "CT",
    accession: str = "",
    issuer: str | None = None,
    birth_date: str = "",
    sex: str = "",
    description: str = "",
    address: str | None = None,
    phone: str | None = None,
    charset: str | None = None,
) -> Dataset:
    """One small secondary-capture image of a study, with the patient data given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    if address is not None:
        ds.PatientAddress = address
    if phone is not None:
        ds.PatientTelephoneNumbers = phone
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyDescription = description
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(4)
    return ds
