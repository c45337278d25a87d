"""The ``crosswalk`` command line; each command is a thin layer over the engine's modules."""

from __future__ import annotations

import typer

from engine.cli import messages, mpi, queue, reconcile, review, routes, send, serve, studies

app = typer.Typer(
    name="crosswalk",
    help="Crosswalk: HL7 v2 integration engine and demographics reconciler for PACS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("serve")(serve.serve)
app.command("send")(send.send)
app.add_typer(messages.app, name="messages")
app.add_typer(routes.app, name="routes")
app.add_typer(queue.app, name="queue")
app.add_typer(mpi.app, name="mpi")
app.add_typer(studies.app, name="studies")
app.add_typer(reconcile.app, name="reconcile")
app.add_typer(review.app, name="review")


def main() -> None:
    app()
