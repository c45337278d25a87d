"""Routing stored messages again with the current routes (``messages resend``, the console)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine

from engine.errors import CrosswalkError
from engine.routes.router import Router
from engine.store.messages import get_message
from engine.store.queue import record_resend, set_control
from engine.store.schema import MessageStatus


class ResendRefused(CrosswalkError):
    """A message that cannot be sent again (unknown, or rejected at intake); ``brief`` is the
    reason without values, for the audit trail."""

    def __init__(self, text: str, brief: str) -> None:
        super().__init__(text)
        self.brief = brief


@dataclass(frozen=True, slots=True)
class Resent:
    """One message routed again: its new status, why, where it went and the deliveries queued."""

    message_id: int
    status: str
    reason: str
    destinations: tuple[str, ...]
    delivery_ids: tuple[int, ...]


def resend(store: Engine, router: Router, message_id: int) -> Resent:
    """Route one stored message again and queue what it produces (``ResendRefused`` when it
    cannot be); a running engine sends it within a second, after what is already queued."""
    message = get_message(store, message_id)
    if message is None:
        raise ResendRefused(f"no message with id {message_id}", "no such message")
    if message.status == MessageStatus.REJECTED:
        raise ResendRefused(
            f"message {message_id} was rejected at intake ({message.status_reason});"
            " it cannot be routed",
            f"message {message_id} was rejected at intake",
        )
    routing = router.route(message.raw, message.charset, message.listener)
    ids = record_resend(store, message_id, routing.status, routing.reason, routing.delivery_rows())
    destinations = tuple(o.destination for o in routing.outbound)
    return Resent(message_id, routing.status, routing.reason, destinations, tuple(ids))


def wake(store: Engine, destinations: Iterable[str]) -> None:
    """Tell the running engine's workers of these destinations to look at their queues."""
    for destination in sorted(set(destinations)):
        set_control(store, destination)
