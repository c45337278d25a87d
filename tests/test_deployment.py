"""The shipped systemd unit (docs/deploy/crosswalk.service) is one systemd accepts, and runs a
command Crosswalk has."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, run_crosswalk

UNIT = ROOT / "docs" / "deploy" / "crosswalk.service"
INSTALLED = "/opt/crosswalk/.venv/bin/crosswalk"


def test_the_systemd_unit_is_valid(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve " in text
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # systemd checks that ExecStart's program exists: point it at this checkout's crosswalk.
    here = Path(sys.executable).parent / "crosswalk"
    unit = tmp_path / "crosswalk.service"
    unit.write_text(text.replace(INSTALLED, str(here)))
    checked = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in checked.stderr.splitlines() if "crosswalk.service" in line]
    assert checked.returncode == 0 and not problems, checked.stderr


def test_the_units_command_line_is_one_crosswalk_takes() -> None:
    command = next(
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    options = [word for word in command.split()[2:] if word.startswith("--")]
    help_text = run_crosswalk("serve", "--help").stdout
    assert options and all(option in help_text for option in options), options
