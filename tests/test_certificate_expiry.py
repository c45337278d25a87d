"""Certificates about to expire are warned about: a listener's, a destination's, an archive's
(DICOM TLS, DICOMweb https) and the audit syslog collector's client certificate and CA, read
from a real configuration folder with certificates made by the test CA."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.config.loader import load_config
from engine.pipeline.certificates import expiring, warn_expiring_certificates
from tests.certificates import Authority
from tests.support import config_folder, destination_yaml

ROUTES = "routes: {}\n"


def _tls(ca: Path, cert: Path, key: Path) -> str:
    return f"{{ca: {ca}, cert: {cert}, key: {key}}}"


def _folder(tmp_path: Path, archive_days: float, syslog_days: float) -> Path:
    ca = Authority(tmp_path / "tls")
    archive = ca.issue("crosswalk-dicom", server=False, days=archive_days, file="archive")
    syslog = ca.issue("crosswalk-audit", server=False, days=syslog_days, file="syslog")
    extra = {
        "archives.yaml": (
            "archives:\n  pacs:\n    dicom_host: 127.0.0.1\n    dicom_port: 11112\n"
            f"    called_ae: PACS\n    tls: {_tls(ca.cert, archive.cert, archive.key)}\n"
        ),
        "audit.yaml": (
            "audit:\n  syslog:\n    host: 127.0.0.1\n    port: 6514\n    protocol: tls\n"
            f"    tls: {_tls(ca.cert, syslog.cert, syslog.key)}\n"
        ),
    }
    return config_folder(tmp_path, ROUTES, endpoints=destination_yaml(9), extra=extra)


def test_the_archives_and_the_syslog_collectors_certificates_are_checked(
    tmp_path: Path,
) -> None:
    config = load_config(_folder(tmp_path, archive_days=10, syslog_days=12))
    lines = expiring(config)
    assert len(lines) == 2, lines
    archive, syslog = sorted(lines)
    assert archive.startswith("archive pacs: certificate ")
    assert "archive.crt (CN=crosswalk-dicom) expires in 1" in archive
    assert syslog.startswith("audit syslog collector: certificate ")
    assert "syslog.crt (CN=crosswalk-audit) expires in 1" in syslog
    assert not expiring(config, days=5)
    # The CA (ten years) is checked too, for each connection that names it.
    ca_lines = [line for line in expiring(config, days=4000) if "(CA)" in line]
    assert sorted(line.split(":")[0] for line in ca_lines) == [
        "archive pacs (CA)",
        "audit syslog collector (CA)",
    ]


def test_certificates_far_from_expiry_are_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(_folder(tmp_path, archive_days=200, syslog_days=11))
    with caplog.at_level(logging.WARNING, logger="engine.pipeline.certificates"):
        warn_expiring_certificates(config)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert warned[0].startswith("audit syslog collector: certificate ")
    assert warned[0].endswith("; renew it (see docs/security.md)")
