"""No PHI at INFO or above: the sample feed through a running engine to a PACS, an MPI and study
import, a reconcile run and review approvals, every log line scanned for the sample patients'
names, birth dates and identifiers. And no command prints a database password."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import time
from pathlib import Path

from engine.hl7v2.message_file import read_message_file
from engine.testing import FakeReceiver, free_port, wait_for_port
from tests.support import ROOT, cli_env, crosswalk

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING|ERROR|CRITICAL) ")
SAMPLES = ROOT / "samples"


def sample_phi() -> set[str]:
    """Names, birth dates and identifiers of the sample patients, as they could be logged."""
    found: set[str] = set()
    for name in ("mpi_export.csv", "pacs_studies.csv"):
        with (SAMPLES / name).open(encoding="utf-8") as file:
            for row in csv.DictReader(file):
                found |= {row["family_name"], row["given_name"]}
                found.add(row.get("mrn") or row.get("patient_id") or "")
                birth = row["birth_date"]
                found |= {birth, birth.replace("-", "")}
    for path in sorted(SAMPLES.glob("*.hl7")):
        for message in read_message_file(path).messages:
            for segment in message.payload.decode("utf-8", "replace").split("\r"):
                fields = segment.split("|")
                if fields[0] == "PID" and len(fields) > 7:
                    found |= set(re.split(r"[\^~&]", fields[3])[:1])
                    found |= set(re.split(r"[\^~&]", fields[5])[:2])
                    found.add(fields[7][:8])
    return {value for value in found if len(value) >= 4}


def logged(text: str) -> list[str]:
    return [line for line in text.splitlines() if LOG_LINE.match(line)]


def test_the_sample_day_reconcile_and_review_log_no_phi(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'crosswalk.db'}"
    pacs = FakeReceiver()
    port = free_port()
    env = cli_env(CROSSWALK_PORT=str(port), PACS_PORT=str(pacs.port), CROSSWALK_LOG_LEVEL="INFO")
    log = tmp_path / "engine.log"
    engine = subprocess.Popen(
        crosswalk("serve", "--config", str(ROOT / "routes"), "--db", db),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    outputs: list[str] = []

    def run(*args: str) -> None:
        done = subprocess.run(
            crosswalk(*args, "--db", db) if args[0] != "send" else crosswalk(*args),
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        outputs.append(done.stderr)
        assert done.returncode in (0, 1), done.stdout + done.stderr

    try:
        wait_for_port(port, engine)
        run("send", f"127.0.0.1:{port}", *(str(p) for p in sorted(SAMPLES.glob("*.hl7"))))
        assert pacs.wait_for(10, timeout=30)
        run("mpi", "import", str(SAMPLES / "mpi_export.csv"))
        run("studies", "import", str(SAMPLES / "pacs_studies.csv"))
        run("reconcile", "run")
        run("review", "approve", "--band", "strong", "--yes", "--user", "tester")
        time.sleep(1.5)  # the engine sends the approved merges
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(60)
        pacs.stop()
    lines = logged(log.read_text(encoding="utf-8", errors="replace"))
    lines += [line for text in outputs for line in logged(text)]
    assert len(lines) > 10, "the engine logged what it did"
    phi = sample_phi()
    assert {"SMITH", "ROBERT", "19580314", "100234"} <= phi
    leaks = [
        (value, line)
        for line in lines
        for value in phi
        if re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", line)
    ]
    assert not leaks, leaks[:5]


def test_no_command_prints_the_database_password(tmp_path: Path) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("Sup3rSecret\n")
    urls = [
        "postgresql+psycopg://crosswalk:Sup3rSecret@127.0.0.1:1/crosswalk",
        f"postgresql+psycopg://crosswalk:${{file:{secret}}}@127.0.0.1:1/crosswalk",
    ]
    for url in urls:
        for args in (("messages", "list"), ("queue", "status"), ("mpi", "show", "100234")):
            done = subprocess.run(
                crosswalk(*args, "--db", url),
                capture_output=True,
                text=True,
                env=dict(cli_env(), PGCONNECT_TIMEOUT="2"),
                timeout=60,
            )
            assert done.returncode != 0
            assert "Sup3rSecret" not in done.stdout + done.stderr
            assert "***" in done.stdout + done.stderr or "cannot" in done.stderr
