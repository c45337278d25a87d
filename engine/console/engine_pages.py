"""The engine's pages: dashboard with queue controls, messages (find, read, resend), routes
(read, test on a pasted message), the audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.audit.trail import EventFilter, events, ref
from engine.audit.trail import criteria as recorded
from engine.console.hl7_names import field_name
from engine.console.permissions import Permission
from engine.console.visits import Console, Visit, guarded, missing, not_found, to
from engine.hl7v2.ack import answer_in_words
from engine.hl7v2.charset import codec_for, decode_stored
from engine.hl7v2.check import examine
from engine.hl7v2.diff import field_changes
from engine.hl7v2.header import HeaderError
from engine.hl7v2.message import Message as Hl7Message
from engine.hl7v2.paths import flatten
from engine.pipeline.resend import ResendRefused, resend, wake
from engine.store.messages import (
    STATUSES,
    MessageFilter,
    find_messages,
    get_message,
    selective_text,
)
from engine.store.queue import (
    deliveries_of,
    requeue_errored,
    routing_backlog,
    set_control,
    summarize,
)
from engine.store.rates import WINDOW as RATES_WINDOW
from engine.store.rates import route_rates

PAGE = 50
"""Messages shown per search."""
TEXT_WINDOW = timedelta(days=7)
"""How far back a text search reads when no Since is given."""


def routes(console: Console) -> list[Route]:
    page = lambda permission: guarded(console, permission)  # noqa: E731
    return [
        Route("/", page(Permission.DASHBOARD)(dashboard)),
        Route("/queues", page(Permission.DASHBOARD)(queues)),
        Route(
            "/queues/{destination}/{verb}",
            page(Permission.QUEUE_CONTROL)(queue_control),
            methods=["POST"],
        ),
        Route("/messages", page(Permission.MESSAGES)(messages)),
        Route("/messages/{message_id:int}", page(Permission.MESSAGES)(message)),
        Route(
            "/messages/{message_id:int}/resend",
            page(Permission.MESSAGES)(resend_page),
            methods=["GET", "POST"],
        ),
        Route("/routes", page(Permission.ROUTES)(routes_page), methods=["GET", "POST"]),
        Route("/audit", page(Permission.AUDIT)(audit_log)),
    ]


def _age(then: datetime | None) -> str:
    if then is None:
        return "-"
    seconds = int((datetime.now(UTC) - then).total_seconds())
    return str(timedelta(seconds=max(seconds, 0)))


def _queues(visit: Visit) -> dict[str, Any]:
    config = visit.console.config
    summaries = summarize(visit.store, config.destinations)
    waiting, oldest = routing_backlog(visit.store)
    sources = {name: route.source for name, route in config.routes.items()}
    return {
        "queues": summaries,
        "rates": route_rates(visit.store, sources),
        "rates_minutes": int(RATES_WINDOW.total_seconds() // 60),
        "age": _age,
        "backlog": waiting,
        "backlog_age": _age(oldest),
        "listeners": config.listeners,
        "routes_config": config.routes,
        "now": datetime.now(UTC),
    }


def dashboard(visit: Visit) -> Response:
    return visit.render("dashboard.html", **_queues(visit))


def queues(visit: Visit) -> Response:
    """The queue table alone: what the dashboard reloads every few seconds."""
    return visit.render("queues.html", **_queues(visit))


def queue_control(visit: Visit) -> Response:
    destination = visit.request.path_params["destination"]
    verb = visit.request.path_params["verb"]
    known = set(visit.console.config.destinations)
    if destination not in known or verb not in ("pause", "resume", "retry"):
        return not_found(visit, f"destination {destination!r} or action {verb!r}")
    objects = [ref("destination", destination)]
    if verb == "pause":
        set_control(visit.store, destination, paused=True, reason=f"paused by {visit.account.name}")
        visit.audit(actions.QUEUE_PAUSE, objects=objects)
    elif verb == "resume":
        set_control(visit.store, destination, paused=False, reason="")
        visit.audit(actions.QUEUE_RESUME, objects=objects)
    else:
        count = requeue_errored(visit.store, destination)
        set_control(visit.store, destination, paused=False, reason="")
        visit.audit(
            actions.QUEUE_RETRY, objects=objects, detail=f"{count} message(s) back in the queue"
        )
    if visit.request.headers.get("HX-Request"):
        return queues(visit)
    return to("/", visit.request)


def _when(text: str) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def messages(visit: Visit) -> Response:
    names = ("since", "until", "type", "control_id", "status", "sender", "text", "listener")
    given = {name: visit.field(name) for name in names}
    error, note = "", ""
    if given["text"] and not given["since"] and not selective_text(visit.store, given["text"]):
        # A text the index does not find in a few messages is found by reading them: a default
        # window keeps a search on a store of millions of messages within a second (when other
        # filters match none); a Since given widens it.
        since_default = datetime.now(UTC) - TEXT_WINDOW
        given["since"] = since_default.strftime("%Y-%m-%d")
        note = (
            f"Text found in many messages (or without the text index) is searched in the last"
            f" {TEXT_WINDOW.days} days unless Since is given."
        )
    found: list[object] = []
    if given["status"] and given["status"] not in STATUSES:
        error = f"status must be one of {', '.join(STATUSES)}"
    try:
        since, until = _when(given["since"]), _when(given["until"])
    except ValueError:
        error, since, until = "times are written 2026-12-04 or 2026-12-04T10:30", None, None
    if not error:
        criteria = MessageFilter(
            since=since,
            until=until,
            message_type=given["type"] or None,
            control_id=given["control_id"] or None,
            status=given["status"] or None,
            sending_application=given["sender"] or None,
            listener=given["listener"] or None,
            text=given["text"] or None,
        )
        found = list(find_messages(visit.store, criteria, limit=PAGE))
        action = actions.MESSAGES_SEARCH if criteria.text else actions.MESSAGES_LIST
        wanted = recorded({k: v for k, v in given.items() if v}, private=("text",))
        visit.audit(
            action,
            objects=[ref("message", m.id) for m in found],  # type: ignore[attr-defined]
            criteria=wanted,
        )
    return visit.render(
        "messages.html", found=found, given=given, statuses=STATUSES, error=error, note=note
    )


@dataclass(frozen=True, slots=True)
class Leaf:
    """One valued field (or component) of a message, with its HL7 name."""

    path: str
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SegmentView:
    label: str
    leaves: list[Leaf]


def tree(text: str) -> list[SegmentView]:
    """A message as its segments, each with its valued leaves and their names."""
    segments: list[SegmentView] = []
    for label, path, value in flatten(text):
        if not segments or segments[-1].label != label:
            segments.append(SegmentView(label, []))
        match = re.match(r"([A-Z0-9]{3})(?:\[\d+\])?-(\d+)", path)
        name = field_name(match.group(1), int(match.group(2))) if match else ""
        segments[-1].leaves.append(Leaf(path, name, value))
    return segments


def _readable(text: str) -> Iterator[SegmentView]:
    try:
        yield from tree(text)
    except HeaderError:
        yield SegmentView("(not readable as HL7)", [Leaf("", "", text)])


def message(visit: Visit) -> Response:
    message_id = visit.request.path_params["message_id"]
    found = get_message(visit.store, message_id)
    if found is None:
        return missing(visit, actions.MESSAGES_SHOW, "message", message_id)
    objects = [ref("message", message_id)]
    visit.audit(actions.MESSAGES_SHOW, objects=objects)
    text = decode_stored(found.raw, found.charset)
    ack = list(_readable(decode_stored(found.ack, found.charset))) if found.ack else []
    deliveries = [
        (d, answer_in_words(d.ack) if d.ack else "") for d in deliveries_of(visit.store, message_id)
    ]
    return visit.render(
        "message.html",
        message=found,
        segments=list(_readable(text)),
        ack=ack,
        deliveries=deliveries,
    )


def resend_page(visit: Visit) -> Response:
    """GET: the confirmation; POST (confirmed): route again and queue."""
    message_id = visit.request.path_params["message_id"]
    found = get_message(visit.store, message_id)
    if found is None:
        return not_found(visit, f"message {message_id}")
    if visit.request.method == "GET":
        return visit.render("resend.html", message=found)
    objects = [ref("message", message_id)]
    try:
        done = resend(visit.store, visit.console.router, message_id)
    except ResendRefused as refused:
        visit.audit(
            actions.MESSAGES_RESEND, objects=objects, outcome=Outcome.REFUSED, detail=refused.brief
        )
        return visit.render("resend.html", message=found, error=str(refused), status_code=409)
    wake(visit.store, done.destinations)
    visit.audit(
        actions.MESSAGES_RESEND,
        objects=objects,
        detail=f"{done.status}; {len(done.delivery_ids)} delivery(ies) queued",
    )
    return visit.render("resend.html", message=found, done=done)


def routes_page(visit: Visit) -> Response:
    """The routes as configured, and a pasted message run through one of them."""
    config = visit.console.config
    route_name, pasted = visit.field("route"), visit.form.get("message", "")
    result: dict[str, Any] = {}
    if visit.request.method == "POST":
        result = _test_route(visit, route_name, pasted)
    return visit.render(
        "routes.html", routes_config=config.routes, chosen=route_name, pasted=pasted, **result
    )


def _test_route(visit: Visit, route_name: str, pasted: str) -> dict[str, Any]:
    settings = visit.console.config.routes.get(route_name)
    if settings is None:
        return {"error": f"no route {route_name!r}"}
    payload = pasted.replace("\r\n", "\r").replace("\n", "\r").strip().encode("utf-8")
    examination = examine(payload)
    visit.audit(actions.ROUTES_TEST, objects=[ref("route", route_name)])
    if examination.problem is not None:
        return {"error": f"refused at intake: {examination.problem}"}
    codec = codec_for(examination.charset) or "utf-8"
    text = payload.decode(codec)
    routing = visit.console.router.run_route(settings, Hl7Message.parse(text), codec)
    outputs = [
        (out.destination, out.partition, field_changes(text, out.message.to_text()))
        for out in routing.outbound
    ]
    return {"routing": routing, "outputs": outputs}


def audit_log(visit: Visit) -> Response:
    user, action = visit.field("user"), visit.field("action")
    wanted = EventFilter(user=user or None, action=action or None, limit=200)
    with visit.store.connect() as connection:
        found = list(reversed(events(connection, wanted)))
    visit.audit(actions.AUDIT_LIST, criteria=recorded({"user": user, "action": action}))
    return visit.render("audit.html", found=found, user=user, action=action)
