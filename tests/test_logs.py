"""Throttled log lines: a flood of the same failure is one line, then one an interval."""

from __future__ import annotations

import logging

import pytest

from engine.logs import Throttled


def test_a_repeated_line_is_logged_once_an_interval_with_the_count_of_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttled = Throttled(logging.getLogger("test.throttled"), interval=10.0)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        logged = [throttled.log("down", "store down: %s", n, now=float(n)) for n in range(25)]
        assert throttled.log("other", "another kind", now=3.0)
    assert [n for n, done in enumerate(logged) if done] == [0, 10, 20]
    assert [r.getMessage() for r in caplog.records] == [
        "store down: 0",
        "store down: 10 (and 9 more like it in the last 10s)",
        "store down: 20 (and 9 more like it in the last 10s)",
        "another kind",  # a key of its own
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
