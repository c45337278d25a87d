"""Keeping the MPI from the ADT and order feeds.

- A01, A04, A05, A08, A28, A31 (and any other ADT with a PID): create the patient, or update it.
- A40: merge the patient of MRG-1 into the patient of PID-3. The merged patient is kept and
  linked (``merged_into``); its identifiers move to the survivor, its name becomes an alias.
- A47: change an identifier (MRG-1 → PID-3).
- A37: unlink two patients (undo a merge between them).
- ORM^O01 / OMI^O23: record the order's accession, placer and filler numbers for its patient.

Updates are ordered by event time (EVN-2, else MSH-7), ties by message id: an update older than
what a patient already reflects is recorded as stale and not applied, so the MPI ends the same
whatever order the messages arrive in. What cannot be applied — a merge into an unknown patient,
a circular merge, an identifier change onto an identifier in use, a value that does not fit
its column (:mod:`engine.mpi.bounds`) — raises :class:`MpiRefusal` with the reason; the message
is then kept as errored for the MPI, as dcm4chee-arc does.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.message import Message
from engine.mpi import bounds
from engine.mpi.bounds import MpiRefusal, fit
from engine.mpi.demographics import (
    Demographics,
    Identifier,
    event_time,
    from_pid,
    identifiers,
    pickled_as_arguments,
)
from engine.mpi.records import MpiRecords, PatientRow


@dataclass(frozen=True, slots=True)
class Applied:
    """What the MPI did with a message."""

    patient_id: int | None
    action: str
    """created, updated, stale, merged, already merged, identifier changed, unlinked,
    not linked, order recorded, ignored."""


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Registration:
    """What an ADT that registers or updates a patient (A01, A04, A08 …) tells the MPI, read
    from the message beforehand (in the routing process, on another core): applying it needs
    neither the message nor its parse."""

    trigger: str
    when: str
    """The event time (:func:`event_time`)."""
    demographics: Demographics


_NOT_REGISTRATIONS = ("A40", "A47", "A37")


def read_registration(message: Message) -> Registration | None:
    """The registration ``message`` carries; None for a merge, an identifier change, an unlink,
    an order or anything else. Raises what :func:`apply_message` would (MpiRefusal …)."""
    code, trigger, _ = message.type_parts()
    if code != "ADT" or trigger in _NOT_REGISTRATIONS:
        return None
    trigger = bounds.without_nul(trigger, "MSH-9.2")  # it goes into the patient's history
    when = event_time(message)
    return Registration(trigger, when, from_pid(message, _segment(message, "PID")))


def apply_registration(
    records: MpiRecords, registration: Registration, message_id: int | None
) -> Applied:
    """Apply a registration read with :func:`read_registration`, in the caller's transaction."""
    return register(
        records,
        registration.demographics,
        registration.when,
        label=f"ADT^{registration.trigger}",
        message_id=message_id,
    )


def apply_message(records: MpiRecords, message: Message, message_id: int | None) -> Applied:
    """Apply one ADT or order message to the MPI, in the caller's transaction."""
    registration = read_registration(message)
    if registration is not None:
        return apply_registration(records, registration, message_id)
    code, trigger, _ = message.type_parts()
    trigger = bounds.without_nul(trigger, "MSH-9.2")  # it goes into the patient's history
    when = event_time(message)
    if code == "ADT":
        if trigger == "A40":
            return _merge(records, message, message_id, when)
        if trigger == "A47":
            return _change_identifier(records, message, message_id, when)
        return _unlink(records, message, message_id, when)
    if code in ("ORM", "OMI"):
        return _order(records, message, message_id, when)
    return Applied(None, "ignored")


def _segment(message: Message, segment_id: str, occurrence: int = 1):  # type: ignore[no-untyped-def]
    found = message.segments_named(segment_id)
    if len(found) < occurrence:
        raise MpiRefusal(f"the message has no {segment_id} segment")
    return found[occurrence - 1]


@dataclass(frozen=True, slots=True)
class _Owner:
    patient_id: int | None
    """The one patient the identifiers point to; None when the MPI knows none of them."""
    matched: str
    """The identifier that named the patient (for messages)."""
    unknown: tuple[Identifier, ...]
    """Identifiers the MPI does not have yet."""


def _owner_of(records: MpiRecords, ids: tuple[Identifier, ...]) -> _Owner:
    """The one patient these identifiers point to; refuses if they name different patients."""
    owners = {}
    unknown = []
    for identifier in ids:
        found = records.owner(identifier.value, identifier.authority)
        if found is None:
            unknown.append(identifier)
        else:
            owners[found[1]] = identifier
    if len(owners) > 1:
        listed = ", ".join(str(i) for i in owners.values())
        raise MpiRefusal(f"the identifiers {listed} belong to different patients")
    if not owners:
        return _Owner(None, "", tuple(unknown))
    ((patient_id, identifier),) = owners.items()
    return _Owner(patient_id, str(identifier), tuple(unknown))


def _newer(current: PatientRow, when: str, message_id: int | None) -> bool:
    """Whether a change at ``when`` (by ``message_id``) is newer than what ``current`` shows."""
    if when != current.event_time:
        return when > current.event_time
    return (message_id or 0) >= (current.last_message_id or 0)


def _names_to_add(
    records: MpiRecords,
    patient_id: int,
    demographics: Demographics,
    previous: dict[str, str] | None = None,
    *,
    created: bool = False,
) -> list[tuple[str, str, str, str]]:
    """Other names (aliases, maiden, a replaced current name) the patient does not have yet
    (``created``: a patient created just now has none, and the store is not asked)."""
    known: set[tuple[str, str, str, str]] = set() if created else records.other_names(patient_id)
    wanted = [(n.kind, n.family, n.given, n.middle) for n in demographics.other_names]
    if previous is not None:
        old = (previous["family_name"], previous["given_name"], previous["middle_name"])
        new = (demographics.name.family, demographics.name.given, demographics.name.middle)
        if any(old) and any(new) and old != new:
            wanted.append(("previous", *old))
    missing = []
    for name in wanted:
        if name not in known:
            missing.append(name)
            known.add(name)
    return missing


def _add_names(
    records: MpiRecords, patient_id: int, names: list[tuple[str, str, str, str]]
) -> None:
    for kind, family, given, middle in names:
        records.add_name(patient_id, kind, family, given, middle)


def register(
    records: MpiRecords,
    demographics: Demographics,
    when: str,
    *,
    label: str,
    message_id: int | None = None,
    command: str = "",
    record_no_change: bool = True,
) -> Applied:
    """Create the patient these demographics identify, or update it if ``when`` is newer.

    ``label`` says what carried them (``ADT^A08``, ``import``) and ``message_id`` or
    ``command`` what caused the change, for the patient's history. Without
    ``record_no_change``, demographics the patient already has change nothing ("unchanged").
    """
    if not demographics.identifiers:
        raise MpiRefusal("PID-3 holds no identifier")
    owner = _owner_of(records, demographics.identifiers)
    patient_id = owner.patient_id
    if patient_id is None:
        patient_id = records.add_patient(demographics.columns(), when, message_id)
        records.add_identifiers_of(patient_id, demographics.identifiers)
        _add_names(
            records, patient_id, _names_to_add(records, patient_id, demographics, created=True)
        )
        records.add_event(patient_id, "created", when, message_id, label, command)
        return Applied(patient_id, "created")
    row = records.patient(patient_id)
    if row.merged_into is not None:
        survivor = records.survivor(patient_id)
        raise MpiRefusal(
            f"{owner.matched} belongs to patient {patient_id}, merged into patient {survivor}"
        )
    columns = demographics.columns()
    # An update does not erase what it does not carry (a PID without an address keeps it).
    merged = {k: (v or row.columns[k]) for k, v in columns.items()}
    changed = sorted(k for k in columns if merged[k] != row.columns[k])
    new_ids = owner.unknown
    names = _names_to_add(records, patient_id, demographics, previous=row.columns)
    if not (record_no_change or changed or new_ids or names):
        return Applied(patient_id, "unchanged")
    if not _newer(row, when, message_id):
        records.add_event(
            patient_id,
            "stale",
            when,
            message_id,
            f"{label} older than event time {row.event_time}: not applied",
            command,
        )
        return Applied(patient_id, "stale")
    records.add_identifiers_of(patient_id, new_ids)
    _add_names(records, patient_id, names)
    records.set_demographics(patient_id, merged, when, message_id)
    records.add_event(
        patient_id,
        "updated",
        when,
        message_id,
        f"{label}: " + (", ".join(changed) or "no change"),
        command,
    )
    return Applied(patient_id, "updated")


def _merge(records: MpiRecords, message: Message, message_id: int | None, when: str) -> Applied:
    pids = message.segments_named("PID")
    mrgs = message.segments_named("MRG")
    if not pids or not mrgs:
        raise MpiRefusal("an A40 needs a PID and an MRG segment")
    result = Applied(None, "merged")
    for pid, mrg in zip(pids, mrgs, strict=False):
        survivor = from_pid(message, pid)
        prior_ids = identifiers(message, mrg, 1)
        if not prior_ids:
            raise MpiRefusal("MRG-1 holds no identifier: nothing to merge")
        target = _owner_of(records, survivor.identifiers).patient_id
        if target is None:
            named = str(survivor.identifiers[0]) if survivor.identifiers else "PID-3 is empty"
            raise MpiRefusal(f"merge into an unknown patient: {named}")
        prior_owner = _owner_of(records, prior_ids)
        prior, prior_label = prior_owner.patient_id, prior_owner.matched
        if prior is None:
            raise MpiRefusal(f"MRG-1 {prior_ids[0]} is not in the MPI: nothing to merge")
        origin = records.owner_and_origin(prior_ids[0].value, prior_ids[0].authority)
        if prior == target and origin is not None and origin[2] is not None:
            records.add_event(target, "stale", when, message_id, "A40 already applied")
            result = Applied(target, "already merged")
            continue
        if prior == target:
            raise MpiRefusal(
                f"circular merge: {prior_label} is already an identifier of the surviving patient"
            )
        target_row = records.patient(target)
        if target_row.merged_into is not None:
            raise MpiRefusal(
                f"the surviving patient {target} was itself merged into {records.survivor(target)}"
            )
        prior_row = records.patient(prior)
        if prior_row.merged_into is not None:
            if records.survivor(prior) == target:
                records.add_event(target, "stale", when, message_id, "A40 already applied")
                result = Applied(target, "already merged")
                continue
            raise MpiRefusal(
                f"{prior_label} was already merged into patient {records.survivor(prior)}"
            )
        records.move_identifiers(prior, target)
        records.set_merged(prior, target)
        name = prior_row.columns
        if name["family_name"] or name["given_name"]:
            records.add_name(
                target, "merged", name["family_name"], name["given_name"], name["middle_name"]
            )
        records.add_event(prior, "merged_into", when, message_id, f"merged into patient {target}")
        records.add_event(
            target, "merged", when, message_id, f"patient {prior} ({prior_label}) merged in"
        )
        if _newer(target_row, when, message_id):
            columns = survivor.columns()
            merged_columns = {k: (v or target_row.columns[k]) for k, v in columns.items()}
            _add_names(
                records,
                target,
                _names_to_add(records, target, survivor, previous=target_row.columns),
            )
            records.set_demographics(target, merged_columns, when, message_id)
        result = Applied(target, "merged")
    return result


def _change_identifier(
    records: MpiRecords, message: Message, message_id: int | None, when: str
) -> Applied:
    pid = _segment(message, "PID")
    mrg = _segment(message, "MRG")
    new_ids = identifiers(message, pid, 3)
    old_ids = identifiers(message, mrg, 1)
    if not new_ids or not old_ids:
        raise MpiRefusal("an A47 needs the new identifier in PID-3 and the old one in MRG-1")
    old, new = old_ids[0], new_ids[0]
    found = records.owner(old.value, old.authority)
    if found is None:
        if records.owner(new.value, new.authority) is not None:
            owner = records.owner(new.value, new.authority)
            records.add_event(
                owner[1] if owner else None, "stale", when, message_id, "A47 already applied"
            )
            return Applied(owner[1] if owner else None, "already changed")
        raise MpiRefusal(f"MRG-1 {old} is not in the MPI")
    identifier_id, patient_id = found
    if records.owner(new.value, new.authority) is not None:
        raise MpiRefusal(f"the new identifier {new} already exists")
    records.change_identifier(identifier_id, new.value, new.authority)
    records.add_event(patient_id, "identifier_changed", when, message_id, f"{old} → {new}")
    return Applied(patient_id, "identifier changed")


def _named_patient(records: MpiRecords, ids: tuple[Identifier, ...]) -> int | None:
    """The patient an identifier was issued to, even if a merge moved it to a survivor."""
    for identifier in ids:
        found = records.owner_and_origin(identifier.value, identifier.authority)
        if found is not None:
            return found[2] if found[2] is not None else found[1]
    return None


def _unlink(records: MpiRecords, message: Message, message_id: int | None, when: str) -> Applied:
    pids = message.segments_named("PID")
    if len(pids) < 2:
        raise MpiRefusal("an A37 needs two PID segments")
    first = _named_patient(records, identifiers(message, pids[0], 3))
    second = _named_patient(records, identifiers(message, pids[1], 3))
    if first is None or second is None:
        raise MpiRefusal("an A37 names a patient the MPI does not know")
    for source, target in ((second, first), (first, second)):
        if records.patient(source).merged_into == target:
            moved = records.move_back(source, target)
            records.set_merged(source, None)
            detail = f"unlinked from patient {target}; {moved} identifier(s) moved back"
            records.add_event(source, "unlinked", when, message_id, detail)
            records.add_event(target, "unlinked", when, message_id, f"patient {source} unlinked")
            return Applied(source, "unlinked")
    records.add_event(first, "stale", when, message_id, f"A37: not linked to patient {second}")
    return Applied(first, "not linked")


def _order(records: MpiRecords, message: Message, message_id: int | None, when: str) -> Applied:
    code, _, _ = message.type_parts()
    pid = _segment(message, "PID")
    demographics = from_pid(message, pid)
    if not demographics.identifiers:
        raise MpiRefusal("PID-3 holds no identifier")
    patient_id = _owner_of(records, demographics.identifiers).patient_id
    if patient_id is None:
        # The order system knows the patient before the MPI does: register them from the PID.
        applied = register(records, demographics, when, label=code, message_id=message_id)
        patient_id = applied.patient_id
    else:
        patient_id = records.survivor(patient_id)
    assert patient_id is not None
    columns = bounds.orders
    if code == "OMI":
        accession = fit(
            message.value(FieldPath("IPC", 1, component=1)), columns.accession, "IPC-1.1"
        )
    else:
        accession = fit(message.value(FieldPath("OBR", 18)), columns.accession, "OBR-18")
    if not accession:
        raise MpiRefusal("the order has no accession number")
    values = {
        "patient_id": patient_id,
        "accession": accession,
        "placer_number": fit(
            message.value(FieldPath("ORC", 2, component=1)), columns.placer_number, "ORC-2.1"
        ),
        "filler_number": fit(
            message.value(FieldPath("ORC", 3, component=1)), columns.filler_number, "ORC-3.1"
        ),
        "procedure_code": fit(
            message.value(FieldPath("OBR", 4, component=1)), columns.procedure_code, "OBR-4.1"
        ),
        "order_control": fit(message.value(FieldPath("ORC", 1)), columns.order_control, "ORC-1"),
        "event_time": when,
        "message_id": message_id,
    }
    records.save_order(records.order_by_accession(accession), values)
    records.add_event(
        patient_id,
        "order",
        when,
        message_id,
        f"{values['order_control']} accession {values['accession']}",
    )
    return Applied(patient_id, "order recorded")
