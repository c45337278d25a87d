"""TLS on MLLP links (the standard library's ``ssl``): contexts for listeners and destinations,
the names a peer's certificate carries, and checks of certificate files.

MLLP over TLS has no port of its own: a listener or destination with TLS settings speaks TLS
from the first byte. Defaults are the safe ones: TLS 1.2 at least, the system's modern ciphers,
certificate and host name verification on a destination, and a listener that can require a
client certificate from a given CA and accept only given subjects.
"""

from __future__ import annotations

import fnmatch
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from engine.settings import Issue, setting

if TYPE_CHECKING:  # cryptography is imported where certificates are read (costly to import)
    from cryptography import x509

__all__ = [
    "MIN_VERSIONS",
    "CertificateInfo",
    "ClientOptions",
    "ClientTLS",
    "ListenerTLS",
    "ServerOptions",
    "ServerTLS",
    "certificate_problems",
    "client_context",
    "peer_names",
    "read_certificate",
    "server_context",
    "subject_allowed",
]

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
"""The lowest TLS versions a link may be set to accept; nothing below 1.2 is offered."""


class ServerOptions(Protocol):
    """A listener's TLS settings (``tls:`` under a listener)."""

    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...
    @property
    def client_ca(self) -> Path | None: ...
    @property
    def require_client_cert(self) -> bool: ...
    @property
    def allowed_subjects(self) -> Sequence[str]: ...
    @property
    def min_version(self) -> str: ...


class ClientOptions(Protocol):
    """A destination's TLS settings (``tls:`` under a destination, or ``crosswalk send``)."""

    @property
    def ca(self) -> Path | None: ...
    @property
    def cert(self) -> Path | None: ...
    @property
    def key(self) -> Path | None: ...
    @property
    def server_name(self) -> str | None: ...
    @property
    def min_version(self) -> str: ...
    @property
    def insecure_skip_verify(self) -> bool: ...


def server_context(options: ServerOptions) -> ssl.SSLContext:
    """A listener's context, its files read now (call again to pick up renewed files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[options.min_version]
    context.load_cert_chain(options.cert, options.key)
    if options.client_ca is not None:
        context.load_verify_locations(options.client_ca)
        context.verify_mode = (
            ssl.CERT_REQUIRED if options.require_client_cert else ssl.CERT_OPTIONAL
        )
    return context


def client_context(options: ClientOptions) -> ssl.SSLContext:
    """A destination's context: the server's certificate and name verified unless
    ``insecure_skip_verify`` (the caller logs that loudly)."""
    context = ssl.create_default_context(cafile=str(options.ca) if options.ca is not None else None)
    context.minimum_version = MIN_VERSIONS[options.min_version]
    if options.cert is not None:
        context.load_cert_chain(options.cert, options.key)
    if options.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """What a listener needs for TLS: the context for new connections, and who may connect."""

    context: ssl.SSLContext
    allowed_subjects: tuple[str, ...] = ()
    handshake_timeout: float = 10.0

    @classmethod
    def of(cls, options: ServerOptions) -> ServerTLS:
        return cls(server_context(options), tuple(options.allowed_subjects))


def peer_names(certificate: dict[str, Any] | None) -> list[str]:
    """The names a verified peer certificate (``getpeercert()``) carries: its subject's common
    names, then its DNS and IP subject alternative names."""
    if not certificate:
        return []
    names = [
        value
        for entry in certificate.get("subject", ())
        for key, value in entry
        if key == "commonName"
    ]
    names += [
        value
        for kind, value in certificate.get("subjectAltName", ())
        if kind in ("DNS", "IP Address")
    ]
    return names


def subject_allowed(names: Iterable[str], patterns: Sequence[str]) -> bool:
    """Whether one of a peer's names matches one of ``patterns`` (glob, any case); no patterns
    allow every subject the CA vouches for."""
    if not patterns:
        return True
    lowered = [p.lower() for p in patterns]
    return any(fnmatch.fnmatchcase(name.lower(), p) for name in names for p in lowered)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What is worth saying about a certificate file."""

    subject: str
    not_after: datetime

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400


def read_certificate(path: Path) -> CertificateInfo:
    """The first certificate of a PEM file; ``ValueError`` naming the problem."""
    certificate = _load_certificates(path)[0]
    return CertificateInfo(certificate.subject.rfc4514_string(), certificate.not_valid_after_utc)


def certificate_problems(
    cert: Path | None, key: Path | None = None, ca: Path | None = None, *, server: bool = True
) -> list[str]:
    """What is wrong with a link's files, in words: missing or unreadable, not PEM, a key that
    does not belong to the certificate, a certificate not yet or no longer valid, a CA file
    without a certificate. Empty when they can be used."""
    from cryptography.hazmat.primitives import serialization

    problems: list[str] = []
    now = datetime.now(UTC)
    certificate = None
    if cert is not None:
        try:
            certificate = _load_certificates(cert)[0]
        except ValueError as error:
            problems.append(str(error))
        else:
            if certificate.not_valid_after_utc < now:
                problems.append(
                    f"{cert}: the certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
                )
            elif certificate.not_valid_before_utc > now:
                problems.append(
                    f"{cert}: the certificate is not valid before"
                    f" {certificate.not_valid_before_utc:%Y-%m-%d}"
                )
            if server and not _may_serve(certificate):
                problems.append(f"{cert}: the certificate may not be used by a TLS server")
    if key is not None:
        try:
            private = serialization.load_pem_private_key(_read(key), password=None)
        except ValueError as error:
            if "Could not deserialize" in str(error) or "Unable to load" in str(error):
                problems.append(f"{key}: not a PEM private key (or it is encrypted)")
            else:
                problems.append(str(error))
        except TypeError:
            problems.append(f"{key}: the private key is encrypted; give it unencrypted")
        else:
            if certificate is not None and _public_bytes(private.public_key()) != _public_bytes(
                certificate.public_key()
            ):
                problems.append(f"{key}: this key does not belong to the certificate {cert}")
    if ca is not None:
        try:
            _load_certificates(ca)
        except ValueError as error:
            problems.append(str(error))
    return problems


def _may_serve(certificate: x509.Certificate) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.SERVER_AUTH in usage


def _public_bytes(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read: {error.strerror}") from None


def _load_certificates(path: Path) -> list[x509.Certificate]:
    from cryptography import x509

    data = _read(path)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path}: not a PEM certificate") from None
    if not found:
        raise ValueError(f"{path}: no certificate in it")
    return found


# --- settings (the `tls:` sections of listeners, destinations and archives) ----------------


@dataclass(frozen=True, kw_only=True)
class ListenerTLS:
    """TLS on a listener: its certificate, and which clients may connect."""

    cert: Path = setting(
        "The listener's certificate (PEM; the chain after it), relative to this file.",
        example="tls/crosswalk.crt",
    )
    key: Path = setting("Its private key (PEM, unencrypted).", example="tls/crosswalk.key")
    client_ca: Path | None = setting(
        "CA certificate(s) (PEM) that client certificates must chain to; without it clients"
        " are not asked for one.",
        default=None,
        example="tls/clients-ca.crt",
    )
    require_client_cert: bool = setting(
        "With `client_ca`: refuse a client that presents no certificate (mutual TLS); false"
        " asks for one but accepts a client without.",
        default=True,
    )
    allowed_subjects: list[str] = setting(
        "Accept only clients whose certificate's common name or subject alternative name"
        " matches one of these (glob patterns, any case); empty: any the CA vouches for.",
        default_factory=list,
        example="[ris.hospital.org, '*.radiology.hospital.org']",
    )
    min_version: Literal["1.2", "1.3"] = setting(
        "The lowest TLS version accepted.", default="1.2", example='"1.3"'
    )

    def check(self) -> list[Issue]:
        problems = [
            Issue(text) for text in certificate_problems(self.cert, self.key, self.client_ca)
        ]
        if self.allowed_subjects and self.client_ca is None:
            problems.append(
                Issue(
                    "allowed_subjects needs client_ca",
                    "the CA that issues the senders' certificates",
                )
            )
        return problems


@dataclass(frozen=True, kw_only=True)
class ClientTLS:
    """TLS where Crosswalk connects out (a destination, an archive's DICOM or DICOMweb
    service): whom to trust, and the certificate to show when asked."""

    ca: Path | None = setting(
        "CA certificate(s) (PEM) the server's certificate must chain to; default: the system's"
        " trusted CAs.",
        default=None,
        example="tls/pacs-ca.crt",
    )
    cert: Path | None = setting(
        "Crosswalk's client certificate, for a server that asks for one (mutual TLS).",
        default=None,
        example="tls/crosswalk-client.crt",
    )
    key: Path | None = setting("Its private key (PEM, unencrypted).", default=None)
    server_name: str | None = setting(
        "The name the server's certificate must carry; default: the host connected to.",
        default=None,
        example="pacs.hospital.org",
    )
    min_version: Literal["1.2", "1.3"] = setting(
        "The lowest TLS version accepted.", default="1.2", example='"1.3"'
    )
    insecure_skip_verify: bool = setting(
        "Do not verify the server's certificate or name (tests only: anyone in the network"
        " path could read and change what is sent). Logged as an ERROR.",
        default=False,
    )

    def check(self) -> list[Issue]:
        problems = [
            Issue(text) for text in certificate_problems(self.cert, self.key, self.ca, server=False)
        ]
        if (self.cert is None) != (self.key is None):
            problems.append(Issue("cert and key go together"))
        return problems
