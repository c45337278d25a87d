"""The review pages: the worklist, a proposal with its evidence and the decisions on it
(approve, reject with a reason, defer; the next proposal at once), batch approval by filter
with a count to confirm; MPI search and the patient page."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.audit.trail import criteria as recorded
from engine.audit.trail import ref
from engine.console.permissions import Permission
from engine.console.visits import Console, Visit, guarded, missing, not_found, to
from engine.mpi.queries import SearchError, search, view
from engine.reconcile.tables import ProposalStatus
from engine.review.decisions import Decided, ReviewError, approve, defer, reject
from engine.review.merge_message import Person
from engine.review.upkeep import refresh
from engine.review.worklist import ReviewFilter, ReviewRow, item, row, rows

WORKLIST = 100
"""Proposals shown on the worklist page."""


def routes(console: Console) -> list[Route]:
    page = lambda permission: guarded(console, permission)  # noqa: E731
    return [
        Route("/review", page(Permission.REVIEW)(worklist)),
        Route("/review/batch", page(Permission.REVIEW)(batch), methods=["GET", "POST"]),
        Route("/review/{proposal_id:int}", page(Permission.REVIEW)(proposal)),
        Route(
            "/review/{proposal_id:int}/decide", page(Permission.REVIEW)(decide), methods=["POST"]
        ),
        Route("/mpi", page(Permission.MPI)(mpi_search)),
        Route("/mpi/{patient_id:int}", page(Permission.MPI)(patient)),
    ]


def _filter(visit: Visit, limit: int | None) -> tuple[ReviewFilter, dict[str, str]]:
    names = ("band", "min", "max", "modality", "from", "to")
    given = {name: visit.field(name) for name in names}

    def number(text: str) -> float | None:
        try:
            return float(text) if text else None
        except ValueError:
            return None

    wanted = ReviewFilter(
        bands=(given["band"],) if given["band"] else (),
        min_probability=number(given["min"]),
        max_probability=number(given["max"]),
        modalities=(given["modality"],) if given["modality"] else (),
        study_date_from=given["from"].replace("-", ""),
        study_date_to=given["to"].replace("-", ""),
        limit=limit,
    )
    return wanted, given


def _authority(visit: Visit) -> str:
    return visit.console.config.review.mrn_authority


def worklist(visit: Visit) -> Response:
    # The whole upkeep (seconds on a large store) runs in the background (engine/console/
    # server.py); a proposal is brought up to date when it is opened or decided.
    wanted, given = _filter(visit, WORKLIST)
    with visit.store.connect() as connection:
        found = rows(connection, wanted, _authority(visit))
    visit.audit(
        actions.REVIEW_LIST,
        objects=[ref("proposal", r.proposal_id) for r in found],
        criteria=recorded({k: v for k, v in given.items() if v}),
    )
    query = "&".join(f"{k}={v}" for k, v in given.items() if v)
    return visit.render("worklist.html", found=found, given=given, query=query)


@dataclass(frozen=True, slots=True)
class Comparison:
    label: str
    study: str
    patient: str

    @property
    def differs(self) -> bool:
        return self.study.strip().upper() != self.patient.strip().upper()


def comparisons(row: ReviewRow) -> list[Comparison]:
    study, patient = dataclasses.asdict(row.study.person), dataclasses.asdict(row.patient)
    return [
        Comparison(name.replace("_", " "), study[name], patient[name])
        for name in Person.__dataclass_fields__
    ]


@dataclass(frozen=True, slots=True)
class Bar:
    """One step of the evidence waterfall, in SVG units."""

    label: str
    weight: float
    x: float
    width: float
    y: float
    positive: bool


BAR_HEIGHT = 22
CHART_WIDTH = 520
LABELS = 150


def waterfall(evidence: list[dict[str, object]]) -> tuple[list[Bar], float, float]:
    """The evidence as bars each starting where the sum before it ended; and the chart's
    height and the x of zero."""
    weights = [float(str(e.get("weight", 0))) for e in evidence]
    running, ends = 0.0, [0.0]
    for w in weights:
        running += w
        ends.append(running)
    low, high = min(ends), max(ends)
    span = (high - low) or 1.0
    scale = (CHART_WIDTH - LABELS - 60) / span  # room for the last value's label
    bars = []
    total = 0.0
    for index, (entry, w) in enumerate(zip(evidence, weights, strict=True)):
        start, end = total, total + w
        total = end
        left = LABELS + (min(start, end) - low) * scale
        label = f"{entry.get('field', '')} {entry.get('level', '')}".strip()
        bars.append(Bar(label, w, left, max(abs(w) * scale, 1.0), index * (BAR_HEIGHT + 4), w >= 0))
    return bars, len(bars) * (BAR_HEIGHT + 4), LABELS + (0 - low) * scale


def proposal(visit: Visit) -> Response:
    proposal_id = visit.request.path_params["proposal_id"]
    return _proposal(visit, proposal_id, "", 200)


def _up_to_date(visit: Visit, proposal_id: int) -> None:
    """Follow a merge of the proposal's candidate, close it if its study was resolved: what
    ``refresh`` does for every proposal, for this one's study alone (milliseconds)."""
    with visit.store.connect() as connection:
        found = row(connection, proposal_id, _authority(visit))
    if found is not None:
        refresh(visit.store, _authority(visit), [found.study_uid])


def _proposal(visit: Visit, proposal_id: int, message: str, status: int) -> Response:
    if not message:
        _up_to_date(visit, proposal_id)
    with visit.store.connect() as connection:
        found = item(connection, proposal_id, _authority(visit))
    if found is None:
        return missing(visit, actions.REVIEW_SHOW, "proposal", proposal_id)
    objects = [ref("proposal", proposal_id)]
    visit.audit(actions.REVIEW_SHOW, objects=objects)
    history = view(visit.store, found.row.patient_id)
    bars, height, zero = waterfall(found.row.evidence)
    return visit.render(
        "proposal.html",
        status_code=status,
        found=found,
        row=found.row,
        comparisons=comparisons(found.row),
        bars=bars,
        chart_height=height,
        chart_width=CHART_WIDTH,
        zero=zero,
        history=history,
        message=message,
        open_statuses=ProposalStatus.OPEN,
    )


def _next(visit: Visit, after: int) -> int | None:
    """The next pending proposal (most probable first) other than ``after``."""
    with visit.store.connect() as connection:
        found = rows(connection, ReviewFilter(limit=2), _authority(visit))
    return next((r.proposal_id for r in found if r.proposal_id != after), None)


def _decide_one(visit: Visit, proposal_id: int, verb: str, reason: str) -> Decided:
    store, who, config = visit.store, visit.account.name, visit.console.config
    if verb == "approve":
        route = visit.console.router.route
        return approve(store, config.review, route, proposal_id, who, reason=reason)
    if verb == "reject":
        return reject(store, proposal_id, who, reason, mrn_authority=config.review.mrn_authority)
    return defer(store, proposal_id, who, reason, mrn_authority=config.review.mrn_authority)


VERBS = {
    "approve": actions.REVIEW_APPROVE,
    "reject": actions.REVIEW_REJECT,
    "defer": actions.REVIEW_DEFER,
}


def decide(visit: Visit) -> Response:
    proposal_id = visit.request.path_params["proposal_id"]
    verb, reason = visit.field("verb"), visit.field("reason")
    if verb not in VERBS:
        return not_found(visit, f"decision {verb!r}")
    objects = [ref("proposal", proposal_id)]
    _up_to_date(visit, proposal_id)
    try:
        decided = _decide_one(visit, proposal_id, verb, reason)
    except ReviewError as refused:
        visit.audit(VERBS[verb], objects=objects, outcome=Outcome.REFUSED, detail=refused.brief)
        return _proposal(visit, proposal_id, str(refused), 409)
    if decided.message_id is not None:
        objects.append(ref("message", decided.message_id))
    visit.audit(VERBS[verb], objects=objects, detail=f"{verb}d")
    following = _next(visit, proposal_id)
    return to(f"/review/{following}" if following else "/review", visit.request)


def batch(visit: Visit) -> Response:
    """Approve every pending proposal the filter selects, once the reviewer has typed how
    many that is (the count they were shown)."""
    wanted, given = _filter(visit, None)
    with visit.store.connect() as connection:
        found = rows(connection, wanted, _authority(visit))
    context: dict[str, Any] = {
        "given": given,
        "count": len(found),
        "query": visit.request.url.query,
    }
    criteria = recorded({k: v for k, v in given.items() if v})
    if visit.request.method == "GET":
        return visit.render("batch.html", **context)
    if visit.field("confirm") != str(len(found)):
        visit.audit(
            actions.REVIEW_APPROVE,
            criteria=criteria,
            outcome=Outcome.REFUSED,
            detail="batch: the count typed was not the count selected",
        )
        return visit.render(
            "batch.html",
            status_code=409,
            error=f"The count typed is not the number of proposals selected ({len(found)}).",
            **context,
        )
    approved, refused = [], []
    reason = f"batch approval by {visit.account.name}"
    for one in found:
        try:
            _decide_one(visit, one.proposal_id, "approve", reason)
            approved.append(one.proposal_id)
        except ReviewError:
            refused.append(one.proposal_id)
    visit.audit(
        actions.REVIEW_APPROVE,
        objects=[ref("proposal", p) for p in approved],
        criteria=criteria,
        detail=f"batch: {len(approved)} approved, {len(refused)} refused",
    )
    return visit.render("batch.html", approved=approved, refused=refused, **context)


def mpi_search(visit: Visit) -> Response:
    family, given, born = visit.field("family"), visit.field("given"), visit.field("birth_date")
    found: list[object] = []
    error = ""
    if family or given or born:
        try:
            found = list(
                search(
                    visit.store,
                    family=family or None,
                    given=given or None,
                    birth_date=born.replace("-", "") or None,
                )
            )
        except SearchError as problem:
            error = str(problem)
        visit.audit(
            actions.MPI_SEARCH,
            objects=[ref("patient", p.id) for p in found],  # type: ignore[attr-defined]
            criteria=recorded(
                {"family": family, "given": given, "birth_date": born},
                private=("family", "given", "birth_date"),
            ),
        )
    return visit.render("mpi.html", found=found, family=family, given=given, born=born, error=error)


def patient(visit: Visit) -> Response:
    patient_id = visit.request.path_params["patient_id"]
    found = view(visit.store, patient_id)
    if found is None:
        return missing(visit, actions.MPI_SHOW, "patient", patient_id)
    objects = [ref("patient", patient_id)]
    visit.audit(actions.MPI_SHOW, objects=objects)
    return visit.render("patient.html", found=found)
