"""The documentation says what the code does."""

from __future__ import annotations

from engine.config.reference import render
from tests.support import ROOT


def test_generated_reference_blocks_are_up_to_date() -> None:
    """Run `python -m engine.config.reference` after changing a setting."""
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert render(text) == text, f"{path} is stale"


def test_readme_has_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
