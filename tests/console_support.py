"""Helpers for the console's tests: a console over a store with proposals, users of each role,
and logging in (password and, where asked, a TOTP code read from the enrolment page)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from pathlib import Path

import pyotp
from sqlalchemy import Engine
from starlette.testclient import TestClient

from engine.config.loader import load_config
from engine.console.app import build_app
from engine.console.server import console_for
from engine.console.visits import Console
from engine.users.accounts import Role, add_user
from tests.support import config_folder, destination_yaml
from tests.test_review import MERGES, REVIEW

PASSWORD = "correct horse battery"
CONSOLE = "console:\n  require_mfa: true\n  lockout_attempts: 3\n"
INBOUND = """
  inbound:
    source: ehr
    filter: {type: [ADT^A08]}
    steps:
      - set: {field: PID-5.1, value: CHANGED}
    destinations: [pacs]
"""


def console_folder(tmp_path: Path, pacs_port: int = 9, console: str = CONSOLE) -> Path:
    return config_folder(
        tmp_path,
        MERGES + INBOUND,
        endpoints=destination_yaml(pacs_port),
        extra={"review.yaml": REVIEW, "console.yaml": console},
    )


def console_over(store: Engine, folder: Path) -> Console:
    return console_for(store, load_config(folder, {}))


def client_of(console: Console) -> TestClient:
    return TestClient(build_app(console), base_url="http://127.0.0.1", follow_redirects=False)


def add_everyone(store: Engine) -> dict[str, str]:
    """A user of each role, named for it (role → name)."""
    for role in Role.ALL:
        add_user(store, role, role, PASSWORD)
    return {role: role for role in Role.ALL}


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


SECRETS: dict[str, str] = {}
"""Enrolled TOTP secrets by user name (the tests' authenticator app)."""


USED: dict[str, int] = {}
"""The last TOTP step used by each user: a code is accepted once, so a second login within
30 seconds gives the next step's code (accepted for clock drift)."""


def next_code(name: str) -> str:
    totp = pyotp.TOTP(SECRETS[name])
    step = max(totp.timecode(datetime.now(UTC)), USED.get(name, 0) + 1)
    USED[name] = step
    return totp.generate_otp(step)


def log_in(client: TestClient, name: str, password: str = PASSWORD) -> None:
    """Log in as ``name``, enrolling or giving a TOTP code when asked; asserts it worked."""
    form = client.get("/login")
    answer = client.post(
        "/login", data={"name": name, "password": password, "csrf": csrf_of(form.text)}
    )
    assert answer.status_code == 303, answer.text[:2000]
    if answer.headers["location"] == "/login/code":
        page = client.get("/login/code")
        key = re.search(r'<code id="totp-key">([A-Z2-7]+)</code>', page.text)
        if key:  # enrolling: a new secret, no step used yet
            SECRETS[name] = html.unescape(key.group(1))
            USED.pop(name, None)
        code = next_code(name)
        answer = client.post("/login/code", data={"code": code, "csrf": csrf_of(page.text)})
        assert answer.status_code == 303, answer.text[:2000]
    assert answer.headers["location"] == "/"
