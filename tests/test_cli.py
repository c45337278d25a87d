"""The command line as users run it: real subprocesses against a real engine and store."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.testing import Peer, free_port
from tests.support import adt, cli_env, crosswalk, hl7, running_engine, serving


def run(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        crosswalk(*args), capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=timeout
    )


def message_file(tmp_path: Path, *payloads: bytes, name: str = "feed.hl7") -> Path:
    """Messages as an analyst saves them: LF line ends, a blank line between messages."""
    text = "\n\n".join(p.decode().replace("\r", "\n").strip("\n") for p in payloads) + "\n"
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_send_prints_a_line_per_message_and_exits_zero(db_url: str, tmp_path: Path) -> None:
    feed = message_file(tmp_path, adt("F1"), adt("F2"), adt("F3", extra_msh="|||AL|AL"))
    with running_engine(db_url) as engine:
        result = run("send", f"127.0.0.1:{engine.port()}", str(feed))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{feed}:1  F1  AA")
    assert lines[1].startswith(f"{feed}:6  F2  AA")
    assert lines[2].startswith(f"{feed}:11  F3  CA  AA")
    assert lines[3] == "3 of 3 message(s) acknowledged positively"


def test_send_exits_one_when_a_message_is_refused(db_url: str, tmp_path: Path) -> None:
    refused = hl7("MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|20261123||ADT^A01||P|2.5.1", "PID|1")
    feed = message_file(tmp_path, adt("G1"), refused)
    with running_engine(db_url) as engine:
        result = run("send", f"127.0.0.1:{engine.port()}", str(feed))
    assert result.returncode == 1
    assert "AR MSH-10 (message control id) is empty" in result.stdout
    assert "ERR 101 Required field missing at MSH-10" in result.stdout
    assert "1 of 2 message(s)" in result.stdout


def test_send_reports_an_unreachable_receiver(tmp_path: Path) -> None:
    feed = message_file(tmp_path, adt("U1"))
    result = run("send", f"127.0.0.1:{free_port()}", str(feed), "--timeout", "2")
    assert result.returncode == 1
    assert "cannot connect to 127.0.0.1:" in result.stderr


def test_send_times_out_on_a_receiver_that_never_answers(tmp_path: Path) -> None:
    feed = message_file(tmp_path, adt("T1"))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = run("send", f"127.0.0.1:{port}", str(feed), "--timeout", "0.5")
    assert result.returncode == 1
    assert "T1  FAILED no answer from" in result.stdout


def test_send_names_the_file_and_line_of_text_outside_any_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.hl7"
    path.write_text("PID|1||123\n" + adt("X1").decode().replace("\r", "\n"), encoding="utf-8")
    result = run("send", "127.0.0.1:1", str(path))
    assert result.returncode == 2
    assert f"{path}:1: segment outside any message (expected MSH first)" in result.stderr
    assert "nothing was sent" in result.stderr


def test_send_reads_batch_files(db_url: str, tmp_path: Path) -> None:
    batch = tmp_path / "batch.hl7"
    body = "\n".join(p.decode().replace("\r", "\n").strip() for p in (adt("B1"), adt("B2")))
    batch.write_text(f"FHS|^~\\&|EPIC\nBHS|^~\\&|EPIC\n{body}\nBTS|2\nFTS|1\n", encoding="utf-8")
    with running_engine(db_url) as engine:
        result = run("send", f"127.0.0.1:{engine.port()}", str(batch))
    assert result.returncode == 0, result.stdout
    assert "2 of 2" in result.stdout


def test_messages_list_show_and_search(db_url: str, tmp_path: Path) -> None:
    with running_engine(db_url) as engine, Peer(engine.port()) as peer:
        peer.exchange(adt("L1", pid="PID|1||777001^^^GENHOSP^MR||MÜLLER^HANS||19700101|M"))
        peer.exchange(adt("L2"))
        peer.exchange(hl7("MSH|^~\\&|RIS|GENHOSP|PACS|RAD|20261123||ORM^O01||P|2.3.1"))
    listed = run("messages", "list", "--db", db_url, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["control_id"] for r in rows] == ["", "L2", "L1"]
    assert rows[0]["status"] == "rejected" and "MSH-10" in rows[0]["status_reason"]

    only_rejected = json.loads(
        run("messages", "list", "--db", db_url, "--status", "rejected", "--format", "json").stdout
    )
    assert [r["message_type"] for r in only_rejected] == ["ORM^O01"]
    adts = json.loads(
        run("messages", "list", "--db", db_url, "--type", "ADT^A0*", "--format", "json").stdout
    )
    assert {r["control_id"] for r in adts} == {"L1", "L2"}
    by_id = json.loads(
        run("messages", "list", "--db", db_url, "--control-id", "L2", "--format", "json").stdout
    )
    assert len(by_id) == 1

    found = json.loads(
        run("messages", "search", "777001", "--db", db_url, "--format", "json").stdout
    )
    assert [r["control_id"] for r in found] == ["L1"]
    assert (
        json.loads(run("messages", "search", "MÜLLER", "--db", db_url, "--format", "json").stdout)[
            0
        ]["control_id"]
        == "L1"
    )

    shown = run("messages", "show", str(rows[2]["id"]), "--db", db_url)
    assert shown.returncode == 0
    assert "PID-5.1" in shown.stdout and "MÜLLER" in shown.stdout
    assert "PID-3.1" in shown.stdout and "777001" in shown.stdout
    assert "acknowledgement sent (AA)" in shown.stdout
    assert "MSA-2           L1" in shown.stdout

    table = run("messages", "list", "--db", db_url)
    assert "L1" in table.stdout and "rejected" in table.stdout


def test_messages_show_of_an_unknown_id_fails_clearly(db_url: str) -> None:
    result = run("messages", "show", "424242", "--db", db_url)
    assert result.returncode == 2
    assert "no message with id 424242" in result.stderr


def test_messages_list_rejects_a_bad_date(db_url: str) -> None:
    result = run("messages", "list", "--db", db_url, "--since", "yesterday-ish")
    assert result.returncode == 2
    assert "is not a date/time" in result.stderr


def test_serve_refuses_a_broken_configuration_with_positions(tmp_path: Path) -> None:
    config = tmp_path / "routes"
    config.mkdir()
    (config / "endpoints.yaml").write_text("listeners:\n  ehr:\n    prot: 2575\n")
    result = run("serve", "--config", str(config), "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2
    assert f"{config / 'endpoints.yaml'}:3:5: unknown key 'prot'" in result.stderr
    assert "nothing was started" in result.stderr


def test_serve_stops_cleanly_on_sigterm_and_logs_no_phi(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    args = ["--db", db_url, "--port", str(port)]
    with serving(args, port, log, cwd=tmp_path) as process:
        secret = "PID|1||PHI-MRN-991^^^GENHOSP^MR||PHIFAMILY^PHIGIVEN||19011231|F"
        with Peer(port) as peer:
            peer.exchange(adt("S1", pid=secret))
            peer.exchange(adt("S1", pid=secret))  # duplicate: logged at INFO
            peer.exchange(adt("S2", pid=secret).replace(b"PHIFAMILY", b"PHI\xffFAMILY"))
            peer.exchange(adt("S3", pid=secret, extra_msh="||||||NOPE"))
    text = log.read_text(errors="replace")
    assert process.returncode == 0, text
    assert "engine stopped" in text
    assert "control_id=S1" in text and "control_id=S2" in text
    for phi in ("PHI-MRN-991", "PHIFAMILY", "PHIGIVEN", "19011231"):
        assert phi not in text


def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--db", str(tmp_path / "x.db"), "--port", str(port), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot listen" in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["messages", "--help"]])
def test_help_is_available(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_send_and_the_engine_agree_under_concurrency(db_url: str, tmp_path: Path) -> None:
    """Two `crosswalk send` processes at once: each gets its own AAs."""
    feeds = [
        message_file(tmp_path, *(adt(f"C{n}-{i}") for i in range(20)), name=f"f{n}.hl7")
        for n in range(2)
    ]
    with running_engine(db_url) as engine:
        results: list[subprocess.CompletedProcess[str]] = []
        threads = [
            threading.Thread(
                target=lambda f=f: results.append(run("send", f"127.0.0.1:{engine.port()}", str(f)))
            )
            for f in feeds
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [r.returncode for r in results] == [0, 0]


def test_a_command_imports_only_what_it_needs_and_help_lists_them_all() -> None:
    probe = (
        "import sys\n"
        "from engine.cli import main\n"
        "sys.argv = ['crosswalk', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('numpy', 'pydicom', 'rapidfuzz', 'engine.reconcile.run')\n"
        "print('LOADED', [m for m in heavy if m in sys.modules])\n"
    )

    def loaded(*args: str) -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=cli_env()
        )
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stdout.rsplit("LOADED", 1)[1].strip()

    shown, heavy = loaded("messages", "--help")
    assert "list" in shown and heavy == "[]"
    shown, heavy = loaded("--help")
    for name in ("serve", "send", "messages", "routes", "queue", "mpi", "studies", "review"):
        assert f" {name} " in shown
    assert "numpy" in heavy  # everything is imported to describe everything
    shown, heavy = loaded("reconcile", "--help")
    assert "run" in shown and "engine.reconcile.run" in heavy


def test_a_store_that_cannot_be_written_is_refused_in_one_line(tmp_path: Path) -> None:
    """`serve` refuses to start (naming the file and the cause) rather than answering AE to
    everything; a command that fails on the store says so in one line, without SQL or values."""
    from tests.support import run_crosswalk

    db = tmp_path / "store.db"
    csv = tmp_path / "mpi.csv"
    csv.write_text(
        "mrn,issuer,family_name,given_name,middle_name,birth_date,sex,street,city,state,"
        "postal_code,phone\n777001,GENHOSP,QUIRKE,ELSA,,1970-01-01,F,,,,,\n"
    )
    assert run_crosswalk("messages", "list", "--db", str(db)).returncode == 0  # created
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    served = subprocess.run(
        crosswalk("serve", "--db", read_only, "--port", "0"),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert served.returncode != 0
    assert f"the store {db} cannot be written" in served.stderr
    imported = run_crosswalk("mpi", "import", str(csv), "--db", read_only)
    assert imported.returncode == 2
    assert "error: the store failed: OperationalError: attempt to write a readonly database" in (
        imported.stderr
    )
    assert "Traceback" not in imported.stderr and "╭" not in imported.stderr
    assert "QUIRKE" not in imported.stdout + imported.stderr
    assert "INSERT" not in imported.stderr


def test_the_common_postgres_spelling_works() -> None:
    import os

    url = os.environ.get("CROSSWALK_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("CROSSWALK_TEST_POSTGRES_URL is not set")
    from tests.support import run_crosswalk

    common = url.replace("postgresql+psycopg://", "postgres://")
    done = run_crosswalk("queue", "status", "--db", common)
    assert done.returncode == 0, done.stderr
