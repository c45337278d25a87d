"""The README's walkthrough runs clean, command by command, as a new user would type it: an
engine started as `make run` starts it, then each command of the README's code blocks in order.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from pathlib import Path

from engine.testing import FakeReceiver, free_port, wait_for_port
from tests.support import ROOT, cli_env, crosswalk

PREFIX = ".venv/bin/crosswalk "


def walkthrough() -> list[list[str]]:
    """The README's commands, in order, without their comments."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith(PREFIX):
                commands.append(shlex.split(line[len(PREFIX) :], comments=True))
    return commands


def test_the_readme_walkthrough_runs_clean(tmp_path: Path) -> None:
    commands = walkthrough()
    assert ["send", "127.0.0.1:2575", "samples/feed_day.hl7"] in commands
    port, pacs = free_port(), FakeReceiver()
    env = cli_env(
        CROSSWALK_DB=f"sqlite:///{tmp_path / 'crosswalk.db'}",
        CROSSWALK_PORT=str(port),
        PACS_PORT=str(pacs.port),
    )
    log = tmp_path / "engine.log"
    engine = subprocess.Popen(
        crosswalk("serve"), cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    outputs: dict[str, str] = {}
    try:
        wait_for_port(port, engine)
        for command in commands:
            command = [
                port and arg.replace("127.0.0.1:2575", f"127.0.0.1:{port}") for arg in command
            ]
            done = subprocess.run(
                crosswalk(*command),
                cwd=ROOT,
                env=env,
                input="q\n",  # `review next` reads one line per key when not on a terminal
                capture_output=True,
                text=True,
                timeout=300,
            )
            words = " ".join(command)
            assert done.returncode == 0, f"{words}:\n{done.stdout}\n{done.stderr}"
            assert "Traceback" not in done.stderr, words
            outputs[words] = done.stdout
        status = subprocess.run(
            crosswalk("queue", "status"), cwd=ROOT, env=env, capture_output=True, text=True
        )
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(60)
        pacs.stop()
    shown = next(text for words, text in outputs.items() if words.startswith("mpi show"))
    assert "ROBERTS" in shown and "TR99002" in shown
    mpi = next(line for line in status.stdout.splitlines() if line.strip().startswith("mpi"))
    cells = [cell.strip() for cell in mpi.split("│")]
    assert (cells[2], cells[4]) == ("0", "0"), f"the MPI applied the whole feed:\n{mpi}"
