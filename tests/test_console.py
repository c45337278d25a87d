"""The web console: every route for each role (allowed and refused), logins with lockout and
throttling, TOTP enrolment, sessions that expire, CSRF, security headers, the audit trail, and
the pages' work (proposal decisions, resend, route test) through the engine's functions."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine, insert, select, update
from starlette.testclient import TestClient

from engine.audit.trail import EventFilter, events
from engine.console import sessions
from engine.hl7v2.check import examine
from engine.reconcile.tables import ProposalStatus
from engine.review.worklist import ReviewFilter, rows
from engine.store import messages, text_index
from engine.store.rates import route_rates
from engine.store.received import message_row
from engine.store.schema import Delivery, Message
from engine.testing import Peer, free_port, wait_for_port
from engine.users.accounts import Role, add_user, disable, find, set_password
from engine.users.keys import stored_key
from tests.console_support import (
    PASSWORD,
    add_everyone,
    client_of,
    console_folder,
    console_over,
    csrf_of,
    log_in,
)
from tests.support import cli_env, crosswalk, serving
from tests.support import run_crosswalk as run
from tests.test_review import prepared

A08 = (
    b"MSH|^~\\&|EHR|GENHOSP|PACS|RAD|20261204101500||ADT^A08^ADT_A01|CTRL123|P|2.5.1\r"
    b"EVN|A08|20261204101500\r"
    b"PID|1||100234^^^GENHOSP^MR||SMITH^WILLIAM^J||19580314|M\r"
)


def stored(store: Engine, raw: bytes = A08) -> int:
    """A message as the listener would have stored it, waiting for routing."""
    row = message_row(raw, len(raw), examine(raw), datetime.now(UTC), "ehr", "127.0.0.1:1")
    row |= {"status": "routed", "status_reason": "", "ack_code": "AA", "ack": b""}
    with store.begin() as connection:
        return int(connection.execute(insert(Message).values(row)).inserted_primary_key[0])


@pytest.fixture
def setup(store: Engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    prepared(store, tmp_path)
    add_everyone(store)
    return console_over(store, console_folder(tmp_path))


def pending(store: Engine) -> list[int]:
    with store.connect() as connection:
        return [r.proposal_id for r in rows(connection, ReviewFilter(), "GENHOSP")]


# (method, path, roles allowed): every route of the app but login, logout and static files.
ROUTES = [
    ("GET", "/", Role.ALL),
    ("GET", "/queues", Role.ALL),
    ("POST", "/queues/pacs/pause", (Role.ANALYST, Role.ADMIN)),
    ("GET", "/messages", (Role.ANALYST, Role.ADMIN)),
    ("GET", "/messages/{message}", (Role.ANALYST, Role.ADMIN)),
    ("GET", "/messages/{message}/resend", (Role.ANALYST, Role.ADMIN)),
    ("POST", "/messages/999999/resend", (Role.ANALYST, Role.ADMIN)),
    ("GET", "/routes", (Role.ANALYST, Role.ADMIN)),
    ("POST", "/routes", (Role.ANALYST, Role.ADMIN)),
    ("GET", "/review", (Role.REVIEWER, Role.ADMIN)),
    ("GET", "/review/{proposal}", (Role.REVIEWER, Role.ADMIN)),
    ("POST", "/review/999999/decide", (Role.REVIEWER, Role.ADMIN)),
    ("GET", "/review/batch", (Role.REVIEWER, Role.ADMIN)),
    ("POST", "/review/batch?band=none", (Role.REVIEWER, Role.ADMIN)),
    ("GET", "/mpi?family=SMITH", (Role.REVIEWER, Role.ADMIN)),
    ("GET", "/mpi/1", (Role.REVIEWER, Role.ADMIN)),
    ("GET", "/audit", (Role.ADMIN,)),
    ("GET", "/users", (Role.ADMIN,)),
    ("POST", "/users", (Role.ADMIN,)),
]


def test_every_route_is_open_to_its_roles_and_refused_to_the_others(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    message, proposal = stored(store), pending(store)[0]
    for role in Role.ALL:
        client = client_of(setup)
        # Not logged in: every page sends to the login.
        assert client.get("/review").headers["location"] == "/login"
        log_in(client, role)
        csrf = csrf_of(client.get("/").text)
        for method, template, allowed in ROUTES:
            path = template.format(message=message, proposal=proposal)
            data = {"csrf": csrf, "verb": "defer", "route": "inbound", "message": A08.decode()}
            answer = client.request(method, path, data=data if method == "POST" else None)
            where = f"{role} {method} {path}"
            if role in allowed:
                assert answer.status_code in (200, 303, 404, 409), (where, answer.status_code)
                assert answer.headers.get("location") != "/login", where
            else:
                assert answer.status_code == 403, (where, answer.status_code)
                assert "may not use" in answer.text
    with store.connect() as connection:
        refused = events(connection, EventFilter(action="console.refused"))
    assert {e.actor for e in refused} == {Role.VIEWER, Role.ANALYST, Role.REVIEWER}
    assert all(e.remote_address == "testclient" for e in refused)


def test_a_post_without_the_sessions_csrf_token_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)
    log_in(client, Role.ANALYST)
    for token in ("", "forged"):
        answer = client.post("/queues/pacs/pause", data={"csrf": token})
        assert answer.status_code == 403 and "expired" in answer.text
    page = client.get("/")
    assert client.post("/queues/pacs/pause", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert "paused" in client.get("/queues").text
    # The login form has its own token too.
    other = client_of(setup)
    other.get("/login")
    answer = other.post("/login", data={"name": "analyst", "password": PASSWORD, "csrf": "x"})
    assert answer.status_code == 403


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def test_sessions_end_when_idle_and_after_their_lifetime(
    setup, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    monkeypatch.setattr(sessions, "time", clock)
    client = client_of(setup)
    log_in(client, Role.VIEWER)
    idle, lifetime = setup.sessions.idle, setup.sessions.lifetime
    clock.now += idle - 1
    assert client.get("/").status_code == 200  # used: the idle time starts again
    clock.now += idle - 1
    assert client.get("/").status_code == 200
    clock.now += idle + 1
    assert client.get("/").headers["location"] == "/login"
    log_in(client, Role.VIEWER)
    for _ in range(int(lifetime // (idle - 1)) + 1):
        clock.now += idle - 1
        answer = client.get("/")
        if answer.status_code != 200:
            break
    assert answer.headers["location"] == "/login"


def test_the_cookie_is_httponly_samesite_and_the_headers_forbid_framing(setup) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)
    page = client.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in page.headers  # only under TLS
    assert "<script>" not in page.text and " style=" not in page.text


def test_wrong_passwords_lock_the_account_and_addresses_are_throttled(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)

    def attempt(name: str, password: str) -> int:
        form = client.get("/login")
        data = {"name": name, "password": password, "csrf": csrf_of(form.text)}
        return client.post("/login", data=data).status_code

    assert [attempt("viewer", "wrong password!") for _ in range(3)] == [401, 401, 401]
    account = find(store, "viewer")
    assert account is not None and account.locked_until is not None
    assert attempt("viewer", PASSWORD) == 401  # locked: the right password is refused too
    statuses = [attempt(f"nobody{i}", "wrong password!") for i in range(8)]
    assert statuses[:6] == [401] * 6 and statuses[6:] == [429, 429]  # 10 a minute per address
    with store.connect() as connection:
        logins = events(connection, EventFilter(action="console.login"))
    details = [e.detail for e in logins]
    assert "wrong password; account locked" in details and "account locked" in details
    assert details.count("throttled") == 2
    assert all("wrong password!" not in e.detail for e in logins)
    # A new password unlocks (`crosswalk users passwd`).
    set_password(store, "viewer", PASSWORD + "2")
    assert attempt("viewer", PASSWORD + "2") in (303, 429)


def test_reviewers_enrol_a_second_factor_and_give_a_code_every_time(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)
    form = client.get("/login")
    answer = client.post(
        "/login", data={"name": "reviewer", "password": PASSWORD, "csrf": csrf_of(form.text)}
    )
    assert answer.headers["location"] == "/login/code"
    enrol = client.get("/login/code")
    assert "<svg" in enrol.text and 'id="totp-key"' in enrol.text
    # Half-way through the login nothing is open.
    assert client.get("/review").headers["location"] == "/login"
    wrong = client.post("/login/code", data={"code": "000000", "csrf": csrf_of(enrol.text)})
    assert wrong.status_code == 401
    assert find(store, "reviewer").enrolled is False  # type: ignore[union-attr]
    log_in(client_of(setup), "reviewer")
    assert find(store, "reviewer").enrolled is True  # type: ignore[union-attr]
    # The next login asks for a code without showing the secret again.
    again = client_of(setup)
    form = again.get("/login")
    again.post(
        "/login", data={"name": "reviewer", "password": PASSWORD, "csrf": csrf_of(form.text)}
    )
    page = again.get("/login/code")
    assert "totp-key" not in page.text and "<svg" not in page.text
    # A viewer needs none.
    viewer = client_of(setup)
    log_in(viewer, Role.VIEWER)
    with store.connect() as connection:
        enrolled = events(connection, EventFilter(action="console.enrol"))
    assert [e.actor for e in enrolled] == ["reviewer"]


def test_disabling_a_user_ends_their_session(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)
    log_in(client, Role.ANALYST)
    assert client.get("/messages").status_code == 200
    disable(store, "analyst")
    assert client.get("/messages").headers["location"] == "/login"


def test_a_proposal_is_decided_once_and_the_next_one_follows(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    add_user(store, "bob", Role.REVIEWER, PASSWORD)
    alice, bob = client_of(setup), client_of(setup)
    log_in(alice, Role.REVIEWER)
    log_in(bob, "bob")
    first, second = pending(store)[:2]
    page_a, page_b = alice.get(f"/review/{first}"), bob.get(f"/review/{first}")
    assert "differs" in page_a.text and "<svg" in page_a.text and 'id="approve"' in page_a.text
    answer = alice.post(
        f"/review/{first}/decide", data={"verb": "approve", "csrf": csrf_of(page_a.text)}
    )
    assert answer.status_code == 303 and answer.headers["location"] == f"/review/{second}"
    late = bob.post(
        f"/review/{first}/decide",
        data={"verb": "reject", "reason": "no", "csrf": csrf_of(page_b.text)},
    )
    assert late.status_code == 409
    assert f"proposal {first} is approved by reviewer" in late.text
    with store.connect() as connection:
        merges = connection.execute(select(Delivery.destination)).scalars().all()
        shown = events(connection, EventFilter(action="review", object=f"proposal:{first}"))
    assert merges == ["pacs"]
    assert [(e.action, e.actor, e.outcome) for e in shown] == [
        ("review.show", "reviewer", "ok"),
        ("review.show", "bob", "ok"),
        ("review.approve", "reviewer", "ok"),
        ("review.reject", "bob", "refused"),
        ("review.show", "bob", "ok"),
    ]
    # A rejection needs a reason.
    page = alice.get(f"/review/{second}")
    refused = alice.post(
        f"/review/{second}/decide", data={"verb": "reject", "csrf": csrf_of(page.text)}
    )
    assert refused.status_code == 409 and "needs a reason" in refused.text


def test_batch_approval_needs_the_count_typed(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)
    log_in(client, Role.ADMIN)
    page = client.get("/review/batch")
    count = int(re.search(r'id="batch-count">(\d+)<', page.text).group(1))  # type: ignore[union-attr]
    assert count == len(pending(store)) > 0
    wrong = client.post(
        "/review/batch", data={"confirm": str(count + 1), "csrf": csrf_of(page.text)}
    )
    assert wrong.status_code == 409 and pending(store)
    done = client.post("/review/batch", data={"confirm": str(count), "csrf": csrf_of(page.text)})
    assert f"{count} approved" in done.text
    with store.connect() as connection:
        approved = rows(connection, ReviewFilter(statuses=(ProposalStatus.APPROVED,)), "")
    assert len(approved) == count


def test_a_message_as_a_named_tree_resent_after_confirmation(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    message = stored(store)
    client = client_of(setup)
    log_in(client, Role.ANALYST)
    listed = client.get("/messages", params={"text": "SMITH", "type": "ADT^A08"})
    assert f'href="/messages/{message}"' in listed.text
    page = client.get(f"/messages/{message}")
    assert "Patient Name" in page.text and "Message Control ID" in page.text
    assert "SMITH" in page.text
    confirm = client.get(f"/messages/{message}/resend")
    assert "Yes, resend" in confirm.text
    with store.connect() as connection:
        assert connection.execute(select(Delivery.id)).first() is None  # nothing before
    done = client.post(f"/messages/{message}/resend", data={"csrf": csrf_of(confirm.text)})
    assert "queued for pacs" in done.text
    with store.connect() as connection:
        assert connection.execute(select(Delivery.destination)).scalars().all() == ["pacs"]
        audited = events(connection, EventFilter(object=f"message:{message}"))
        searched = events(connection, EventFilter(action="messages.search"))
    assert [e.action for e in audited] == ["messages.search", "messages.show", "messages.resend"]
    assert searched[0].criteria["text"] == "(given)"


def test_a_route_tested_on_a_pasted_message_shows_the_field_diff(setup) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)
    log_in(client, Role.ANALYST)
    page = client.get("/routes")
    assert "inbound" in page.text and "merges" in page.text
    pasted = A08.decode().replace("\r", "\n")
    answer = client.post(
        "/routes", data={"route": "inbound", "message": pasted, "csrf": csrf_of(page.text)}
    )
    assert "→ pacs: 1 change(s)" in answer.text
    assert "PID-5.1" in answer.text and "CHANGED" in answer.text


def typed(*args: str, line: str) -> subprocess.CompletedProcess[str]:
    """``crosswalk ARGS`` with ``line`` on its standard input."""
    return subprocess.run(
        crosswalk(*args),
        input=line + "\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )


def test_users_command_adds_lists_and_disables(db_url: str) -> None:
    def add() -> subprocess.CompletedProcess[str]:
        return typed(
            "users",
            "add",
            "carol",
            "--role",
            "analyst",
            "--password-stdin",
            "--db",
            db_url,
            line=PASSWORD,
        )

    added = add()
    assert added.returncode == 0, added.stderr
    again = add()
    assert again.returncode == 2 and "already a user 'carol'" in again.stderr
    short = typed(
        "users", "add", "dave", "--role", "admin", "--password-stdin", "--db", db_url, line="short"
    )
    assert short.returncode == 2 and "at least 12" in short.stderr
    assert run("users", "disable", "carol", "--db", db_url).returncode == 0
    listed = run("users", "list", "--db", db_url)
    assert re.search(r"carol\W+analyst\W+disabled", listed.stdout), listed.stdout


def test_an_admin_adds_and_disables_a_user_on_the_users_page(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    client = client_of(setup)
    log_in(client, Role.ADMIN)
    page = client.get("/users")
    assert "reviewer" in page.text and "enrolled" in page.text  # the admin just enrolled
    data = {
        "verb": "add",
        "name": "erin",
        "role": "analyst",
        "password": PASSWORD,
        "csrf": csrf_of(page.text),
    }
    assert "user erin added (analyst)" in client.post("/users", data=data).text
    short = client.post("/users", data=data | {"name": "fred", "password": "short"})
    assert short.status_code == 409 and "at least 12" in short.text
    gone = client.post(
        "/users", data={"verb": "disable", "name": "erin", "csrf": csrf_of(page.text)}
    )
    assert "user erin disabled" in gone.text
    assert find(store, "erin").disabled and find(store, "fred") is None  # type: ignore[union-attr]
    with store.connect() as connection:
        changes = events(connection, EventFilter(action="users"))
    assert [(e.action, e.outcome, e.objects) for e in changes] == [
        ("users.add", "ok", ("user:erin",)),
        ("users.add", "refused", ("user:fred",)),
        ("users.disable", "ok", ("user:erin",)),
    ]
    assert all(PASSWORD not in e.detail and e.actor == "admin" for e in changes)


def test_sessions_outlive_a_restart_of_the_console(
    setup, store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The signing key is made once and kept in the store: a console started again over the
    same store (no $CROSSWALK_CONSOLE_KEY) reads the cookies of the one before it."""
    monkeypatch.delenv("CROSSWALK_CONSOLE_KEY", raising=False)
    before = console_over(store, console_folder(tmp_path))
    client = client_of(before)
    log_in(client, Role.VIEWER)
    assert client.get("/").status_code == 200
    cookies = dict(client.cookies)

    def restarted() -> TestClient:
        again = client_of(console_over(store, console_folder(tmp_path)))
        again.cookies.update(cookies)
        return again

    assert restarted().get("/").status_code == 200
    assert stored_key(store) == stored_key(store)
    monkeypatch.setenv("CROSSWALK_CONSOLE_KEY", "another key")  # the environment's key wins
    assert restarted().get("/").headers["location"] == "/login"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_with_console_serves_both_and_sessions_outlive_the_restart(
    db_url: str, store: Engine, tmp_path: Path
) -> None:
    """``crosswalk serve --console``: one process takes messages and serves the console (its
    console: section); the console shows what the engine just stored; after the process is
    stopped and started again, the browser's session still holds (the key is in the store)."""
    console_port, mllp_port = free_port(), free_port()
    console = f"console:\n  port: {console_port}\n  require_mfa: false\n"
    folder = console_folder(tmp_path, console=console)
    add_user(store, "ana", Role.ANALYST, PASSWORD)
    args = ["--config", str(folder), "--db", db_url, "--port", str(mllp_port), "--console"]
    env = cli_env(CROSSWALK_CONSOLE_KEY="")
    with serving(args, mllp_port, tmp_path / "first.log", env) as engine:
        wait_for_port(console_port, engine)
        client = httpx2.Client(base_url=f"http://127.0.0.1:{console_port}", timeout=10)
        log_in(client, "ana")  # type: ignore[arg-type]
        peer = Peer(mllp_port)
        peer.send(A08)
        assert b"MSA|AA" in peer.read()
        found = client.get("/messages?control_id=CTRL123")
        assert found.status_code == 200 and "CTRL123" in found.text
    assert engine.returncode == 0
    with pytest.raises(httpx2.ConnectError):
        client.get("/")
    with serving(args, mllp_port, tmp_path / "second.log", env) as engine:
        wait_for_port(console_port, engine)
        assert client.get("/").status_code == 200, "the session ended with the restart"
    assert engine.returncode == 0
    assert f"console on http://127.0.0.1:{console_port}" in (tmp_path / "first.log").read_text()


def test_the_dashboard_shows_each_routes_rates(setup, store: Engine) -> None:  # type: ignore[no-untyped-def]
    """Per route, messages per minute over the last five minutes: routed (a delivery queued),
    errored (the reason names the route), filtered (the rest of its source's messages);
    messages older than the window and not yet routed do not count."""
    now = datetime.now(UTC)
    ids = [stored(store) for _ in range(10)]
    with store.begin() as connection:
        connection.execute(
            update(Message)
            .where(Message.id.in_(ids[6:8]))
            .values(status="errored", status_reason="errored in inbound for pacs: no table X")
        )
        connection.execute(update(Message).where(Message.id == ids[8]).values(status="received"))
        old = now - timedelta(minutes=6)
        connection.execute(update(Message).where(Message.id == ids[9]).values(received_at=old))
        connection.execute(
            insert(Delivery),
            [
                {
                    "message_id": i,
                    "route": "inbound",
                    "destination": "pacs",
                    "payload": b"",
                    "state": "queued",
                    "created_at": now,
                }
                for i in ids[:3]
            ],
        )
    sources = {"inbound": ["ehr"], "merges": ["review"]}
    rates = {r.route: r for r in route_rates(store, sources, now=now + timedelta(seconds=1))}
    assert (rates["inbound"].routed, rates["inbound"].filtered, rates["inbound"].errored) == (
        pytest.approx(3 / 5),
        pytest.approx(3 / 5),
        pytest.approx(2 / 5),
    )
    assert (rates["merges"].routed, rates["merges"].filtered) == (0, 0)
    client = client_of(setup)
    log_in(client, Role.VIEWER)
    page = client.get("/").text
    row = re.search(r"<tr><td>inbound</td>.*?</tr>", page, re.S)
    assert row and re.findall(r">(\d+\.\d)<", row.group(0)) == ["0.6", "0.6", "0.4"], page
    refreshed = client.get("/queues").text
    assert 'id="route-rates" hx-swap-oob="true"' in refreshed and "<td>inbound</td>" in refreshed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_text_search_reads_every_day_once_the_index_is_kept(
    setup, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Without the text index a text search looks at the last 7 days (and says so); once the
    console's index has begun, at every day, for a text the index finds in few messages."""
    old = stored(store, A08.replace(b"SMITH^WILLIAM", b"QUIGLEY^ROSALIND"))
    month_ago = datetime.now(UTC) - timedelta(days=30)
    with store.begin() as connection:
        connection.execute(update(Message).where(Message.id == old).values(received_at=month_ago))
    stored(store)  # a newer message, without the name
    client = client_of(setup)
    log_in(client, Role.ANALYST)
    before = client.get("/messages?text=QUIGLEY").text
    assert "in the last 7 days unless Since is given" in before
    assert f'href="/messages/{old}"' not in before
    assert text_index.catch_up(store) == 2
    after = client.get("/messages?text=QUIGLEY").text
    assert "last 7 days" not in after and f'href="/messages/{old}"' in after
    monkeypatch.setattr(messages, "SELECTIVE", 0)  # a text found in more messages than that
    frequent = client.get("/messages?text=QUIGLEY").text
    assert "last 7 days" in frequent and f'href="/messages/{old}"' not in frequent
