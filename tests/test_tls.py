"""TLS and mutual TLS on MLLP links, with certificates made by the tests.

A listener with TLS: AA over TLS; without a client certificate, with an expired one, with one
from another CA, with a subject not allowed, or offering TLS 1.1: refused, logged and counted. A
destination with TLS: verified by name, refused when the PACS's certificate names another host.
A reload swaps the certificate while an open connection stays up. An outside peer, Debian's
`openssl s_client`, sends a framed message over mutual TLS and reads the ACK.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.hl7v2.ack import read_ack
from engine.mllp.client import MLLPClient, MLLPError
from engine.mllp.framing import encode_frame
from engine.mllp.tls import ListenerTLS
from engine.pipeline.settings import ListenerSettings
from engine.testing import FakeReceiver, Peer
from tests.certificates import Authority
from tests.support import EngineThread, adt, config_folder, running_pipeline


@dataclasses.dataclass
class Pki:
    ca: Authority
    other_ca: Authority
    folder: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "tls"
    return Pki(Authority(folder), Authority(folder, "Some Other CA"), folder)


def client_context(
    pki: Pki,
    name: str = "ris.hospital.org",
    *,
    authority: Authority | None = None,
    expired: bool = False,
) -> ssl.SSLContext:
    """A sender's context: trusts the test CA, shows a certificate for ``name`` (none for '')."""
    context = ssl.create_default_context(cafile=pki.ca.cert)
    if name:
        issued = (authority or pki.ca).issue(name, server=False, expired=expired)
        context.load_cert_chain(issued.cert, issued.key)
    return context


@pytest.fixture(params=["asyncio", "uvloop"])
def tls_engine(pki: Pki, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EngineThread]:
    """An engine with one mutual-TLS listener, on asyncio's loop and on uvloop (what `serve`
    runs on): their TLS transports differ."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    server = pki.ca.issue("crosswalk.hospital.org", file="server")
    tls = ListenerTLS(
        cert=server.cert,
        key=server.key,
        client_ca=pki.ca.cert,
        allowed_subjects=["ris.hospital.org", "*.radiology.hospital.org"],
    )
    assert tls.check() == []
    listener = ListenerSettings(name="secure", port=0, tls=tls)
    engine = EngineThread(
        f"sqlite:///{tmp_path / 'engine.db'}",
        {"secure": listener},
        uvloop=request.param == "uvloop",
    ).start()
    try:
        yield engine
    finally:
        engine.stop()


def refused(port: int, context: ssl.SSLContext) -> bool:
    """True when the engine refuses the connection (during or right after the handshake)."""
    try:
        with Peer(port, timeout=5, tls=context, server_name="localhost") as peer:
            peer.send(adt("REFUSED"))
            peer.read(timeout=5)
    except (ssl.SSLError, OSError, ConnectionError, TimeoutError):
        return True
    return False


def test_mutual_tls_carries_messages_and_acks(pki: Pki, tls_engine: EngineThread) -> None:
    with Peer(
        tls_engine.port(), tls=client_context(pki), server_name="localhost", timeout=10
    ) as peer:
        reply = read_ack(peer.exchange(adt("TLS1")))
        assert peer.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
    assert (reply.code, reply.control_id) == ("AA", "TLS1")


@pytest.mark.parametrize(
    "case", ["no certificate", "expired", "other CA", "subject not allowed", "TLS 1.1"]
)
def test_the_wrong_clients_are_refused_logged_and_counted(
    pki: Pki, tls_engine: EngineThread, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    if case == "no certificate":
        context = client_context(pki, name="")
    elif case == "expired":
        context = client_context(pki, expired=True)
    elif case == "other CA":
        context = client_context(pki, authority=pki.other_ca)
    elif case == "subject not allowed":
        context = client_context(pki, name="laptop.guest.org")
    else:
        context = client_context(pki)
        with warnings.catch_warnings():  # deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert refused(tls_engine.port(), context)
    deadline = time.monotonic() + 5
    while tls_engine.stats().tls_refused < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tls_engine.stats().tls_refused == 1
    assert "TLS refused to 127.0.0.1:" in caplog.text
    if case == "subject not allowed":
        assert "certificate subject not allowed (laptop.guest.org" in caplog.text


def test_a_wildcard_subject_is_allowed(pki: Pki, tls_engine: EngineThread) -> None:
    context = client_context(pki, name="ct1.radiology.hospital.org")
    with Peer(tls_engine.port(), tls=context, server_name="localhost") as peer:
        assert read_ack(peer.exchange(adt("WILD"))).code == "AA"


def test_a_destination_verifies_the_pacs_name(pki: Pki, tmp_path: Path) -> None:
    """The PACS's certificate names pacs.hospital.org: connecting to it as `localhost` is
    refused (and retried); with `server_name: pacs.hospital.org` the message goes through."""
    issued = pki.ca.issue("pacs.hospital.org", dns=("pacs.hospital.org",), ip=(), file="pacs")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    pacs = FakeReceiver(tls=context)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    tls = f"{{ca: {pki.ca.cert}}}"
    with running_pipeline(
        f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a", pacs.port, tls=tls
    ) as engine:
        with Peer(engine.port()) as peer:
            assert read_ack(peer.exchange(adt("NAME1"))).code == "AA"
        time.sleep(1.0)
        assert pacs.received == [], "sent to a PACS whose certificate names another host"
    named = f"{{ca: {pki.ca.cert}, server_name: pacs.hospital.org}}"
    with running_pipeline(
        f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "b", pacs.port, tls=named
    ) as engine:
        with Peer(engine.port()) as peer:
            assert read_ack(peer.exchange(adt("NAME2"))).code == "AA"
        assert pacs.wait_for(1)
    pacs.stop()
    assert pacs.control_ids() == ["NAME2"]
    assert pacs.tls_failures >= 1


def test_the_client_refuses_a_server_from_another_ca(pki: Pki) -> None:
    issued = pki.other_ca.issue("localhost", file="rogue")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    rogue = FakeReceiver(tls=context)

    async def attempt() -> None:
        client = MLLPClient(
            "127.0.0.1",
            rogue.port,
            connect_timeout=5,
            tls=ssl.create_default_context(cafile=pki.ca.cert),
            server_name="localhost",
        )
        await client.connect()

    with pytest.raises(MLLPError, match="certificate is not accepted"):
        asyncio.run(attempt())
    rogue.stop()


def test_a_reload_swaps_the_certificate_and_keeps_open_connections(
    pki: Pki, tmp_path: Path
) -> None:
    first = pki.ca.issue("crosswalk.hospital.org", file="first")
    second = pki.ca.issue("crosswalk-renewed.hospital.org", file="second")
    live = pki.folder / "live.crt", pki.folder / "live.key"
    shutil.copy(first.cert, live[0])
    shutil.copy(first.key, live[1])
    endpoints = (
        "listeners:\n  ehr:\n    port: 0\n    tls:\n"
        f"      cert: {live[0]}\n      key: {live[1]}\n      client_ca: {pki.ca.cert}\n"
    )
    folder = config_folder(tmp_path, "routes: {}\n", endpoints=endpoints)
    from tests.support import Pipeline

    engine = Pipeline(f"sqlite:///{tmp_path / 'r.db'}", folder)
    engine.start()
    try:
        context = client_context(pki)
        with Peer(engine.port(), tls=context, server_name="localhost") as old:
            assert read_ack(old.exchange(adt("BEFORE"))).code == "AA"
            shutil.copy(second.cert, live[0])
            shutil.copy(second.key, live[1])
            (folder / "endpoints.yaml").write_text(endpoints + "# renewed\n")
            deadline = time.monotonic() + 10
            while engine.server.watcher.reloads < 1:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "no reload"
                time.sleep(0.05)
            with Peer(engine.port(), tls=context, server_name="localhost") as new:
                shown = new.sock.getpeercert()  # type: ignore[attr-defined]
                assert read_ack(new.exchange(adt("NEW"))).code == "AA"
            subject = dict(x[0] for x in shown["subject"])
            assert subject["commonName"] == "crosswalk-renewed.hospital.org"
            assert read_ack(old.exchange(adt("STILL"))).code == "AA", "the old one stays up"
    finally:
        engine.stop()


def test_openssl_s_client_sends_over_mutual_tls(pki: Pki, tls_engine: EngineThread) -> None:
    """An outside peer not written by us."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    issued = pki.ca.issue("ris.hospital.org", server=False, file="s_client")
    frame = encode_frame(adt("OPENSSL1"))
    process = subprocess.Popen(
        [
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{tls_engine.port()}",
            "-cert",
            str(issued.cert),
            "-key",
            str(issued.key),
            "-CAfile",
            str(pki.ca.cert),
            "-verify_return_error",
            "-quiet",
            "-ign_eof",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(frame)
    process.stdin.flush()  # the connection stays open (-ign_eof): read until the ACK is in
    answer = b""
    deadline = time.monotonic() + 20
    os.set_blocking(process.stdout.fileno(), False)
    while b"\x1c" not in answer and time.monotonic() < deadline and process.poll() is None:
        answer += process.stdout.read() or b""
        time.sleep(0.05)
    process.kill()
    _, errors = process.communicate(timeout=10)
    assert b"MSA|AA|OPENSSL1" in answer, errors.decode(errors="replace")


def test_routes_check_names_each_tls_problem_with_its_place(pki: Pki, tmp_path: Path) -> None:
    from engine.config.loader import load_config
    from engine.settings import ConfigError

    good = pki.ca.issue("crosswalk.hospital.org", file="good")
    expired = pki.ca.issue("old.hospital.org", expired=True, file="old")
    endpoints = f"""
listeners:
  a:
    port: 0
    tls: {{cert: {expired.cert}, key: {expired.key}}}
  b:
    port: 0
    tls: {{cert: {good.cert}, key: {expired.key}}}
  c:
    port: 0
    tls: {{cert: missing.crt, key: {good.key}}}
  d:
    port: 0
    tls: {{cert: {good.cert}, key: {good.key}, min_version: "1.1"}}
destinations:
  pacs:
    host: 127.0.0.1
    port: 2576
    tls: {{ca: {good.key}}}
"""
    folder = config_folder(tmp_path, "routes: {}\n", endpoints=endpoints)
    with pytest.raises(ConfigError) as caught:
        load_config(folder, {})
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "endpoints.yaml:5:" in text and "the certificate expired on" in text
    assert "endpoints.yaml:8:" in text and "this key does not belong to the certificate" in text
    assert f"{folder / 'missing.crt'}: no such file" in text  # relative to the file naming it
    assert "min_version must be one of 1.2, 1.3" in text
    assert f"{good.key}: not a PEM certificate" in text


def test_crosswalk_send_speaks_mutual_tls(
    pki: Pki, tls_engine: EngineThread, tmp_path: Path
) -> None:
    from tests.support import run_crosswalk

    issued = pki.ca.issue("ris.hospital.org", server=False, file="send")
    message = tmp_path / "one.hl7"
    message.write_bytes(adt("SENDTLS"))
    address = f"127.0.0.1:{tls_engine.port()}"
    common = ("--tls-ca", str(pki.ca.cert), "--tls-server-name", "localhost")
    sent = run_crosswalk(
        "send",
        address,
        str(message),
        *common,
        "--tls-cert",
        str(issued.cert),
        "--tls-key",
        str(issued.key),
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "SENDTLS  AA" in sent.stdout
    anonymous = run_crosswalk("send", address, str(message), *common, "--timeout", "5")
    assert anonymous.returncode == 1
    assert "1 of 1" not in anonymous.stdout


def test_many_senders_at_once_over_tls(pki: Pki, tls_engine: EngineThread) -> None:
    """Eight connections opened together, each sending at once: every message is answered AA
    (on uvloop, bytes that arrived before the handshake once reached the MLLP decoder)."""
    import threading

    context = client_context(pki)
    codes: list[str] = []

    def sender(n: int) -> None:
        with Peer(tls_engine.port(), tls=context, server_name="localhost") as peer:
            for i in range(20):
                peer.send(adt(f"M{n}-{i}"))
            codes.extend(read_ack(peer.read()).code for _ in range(20))

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == ["AA"] * 160
    assert tls_engine.stats().garbage_bytes == 0
