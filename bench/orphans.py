"""Synthetic orphaned studies with the truth, for the reconciler's benchmark (bench/reconcile.py).

Writes into ``--out``:

- ``mpi.csv``: General Hospital's MPI export (the columns of `crosswalk mpi import`), with hard
  negatives: twin pairs (same family name, birth date, address and phone, other given names),
  Jr/Sr pairs (same name and address, born 20 to 40 years apart) and very common names;
- ``studies.csv``: orphaned studies (the columns of `crosswalk studies import`): their patient id
  is no live MPI identifier (another site's MRN, a mistyped MRN, a trauma placeholder, none),
  their demographics carry the errors PACS make (typos, nicknames, swapped names, transposed
  dates, married names, missing values), some in the combinations that hide a patient from
  every single key (no birth date and a married or misspelt family name; initials and a
  misspelt name or birth date; a one-digit birth-date error and a nickname or married name),
  some with a slip in the recorded address or phone; some are of patients the MPI does not
  know;
- ``orders.csv`` (accession, mrn): the imaging orders the order feed recorded for ~40% of them;
- ``truth.csv`` (study_uid, mrn, kind, trap): the true MRN ('' when the patient is not in the
  MPI), the scenario (labels joined by ``+``), and the MRN of the hard negative the study
  invites (twin, Jr/Sr counterpart, namesake), if any;
- ``twins.csv`` (mrn, sibling_mrn, kind): the twin and Jr/Sr pairs of the MPI;
- ``manifest.json``: the parameters, written last.

Everything is reproducible from the seed.

    python bench/orphans.py --patients 1000000 --orphans 10000 --seed 1 --out /tmp/orphans
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nicknames import NickNamer
from synthetic import MPI_COLUMNS, Person, Pools, people

from engine.studies.orphans import STUDY_COLUMNS as INDEX_COLUMNS

ISSUER = "GENHOSP"
FIRST_MRN = 1_000_000
ADDRESS_COLUMNS = ("street", "city", "state", "postal_code", "phone")
STUDY_COLUMNS = (*INDEX_COLUMNS, *ADDRESS_COLUMNS)
"""The columns of samples/pacs_studies.csv."""
FILES = ("mpi.csv", "studies.csv", "orders.csv", "truth.csv", "twins.csv", "manifest.json")
UID_ROOT = "1.2.826.0.1.3680043.10.9999"
TWIN, JUNIOR = "twin", "junior_senior"

TWIN_SHARE = 0.01
"""Patients of the MPI in twin pairs."""
JUNIOR_SHARE = 0.005
"""Patients of the MPI in Jr/Sr pairs."""
COMMON_SHARE = 0.02
"""Patients given one of the very common names below (on top of SMITH's natural share)."""
COMMON_FAMILIES = ("SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS")
COMMON_GIVEN = {
    "M": ("JAMES", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID"),
    "F": ("MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "MARIA"),
}
COMMON_NAMES = frozenset(
    (family, given)
    for family in COMMON_FAMILIES
    for names in COMMON_GIVEN.values()
    for given in names
)
SIMILAR_TWINS = (
    (("ANNA", "F"), ("ANNE", "F")),
    (("MARIA", "F"), ("MARIE", "F")),
    (("JULIA", "F"), ("JULIE", "F")),
    (("LAURA", "F"), ("LAUREN", "F")),
    (("CHRISTINA", "F"), ("CHRISTINE", "F")),
    (("DANIEL", "M"), ("DAVID", "M")),
    (("AARON", "M"), ("ADAM", "M")),
    (("MATTHEW", "M"), ("MARK", "M")),
    (("JOHN", "M"), ("JOAN", "F")),
    (("FRANCIS", "M"), ("FRANCES", "F")),
    (("DANIEL", "M"), ("DANIELLE", "F")),
    (("ERIC", "M"), ("ERICA", "F")),
)
"""Twins named alike (ANNA and ANNE): a given name one typo away is the other twin's."""

# Study scenarios (shares of the orphans); the rest are studies of any MPI patient.
TRAUMA_LINKED = 0.04
"""Trauma placeholders whose accession links to an order of the true patient."""
TRAUMA_UNLINKED = 0.04
"""Trauma placeholders of patients never identified (not in the MPI): unfindable."""
ABSENT = 0.08
"""Studies of patients the MPI does not know (some of a twin's or a namesake's profile)."""
TWIN_STUDIES = 0.03
JUNIOR_STUDIES = 0.02
ORDER_SHARE = 0.40
"""Studies whose accession the order feed recorded (all linkable trauma ones among them)."""
ERROR_COUNTS = (0.40, 0.35, 0.17, 0.08)
"""Shares of studies with 0, 1, 2 and 3 demographic errors."""
ADDRESS_SHARE = 0.1
"""Studies whose PACS recorded address and phone."""
ADDRESS_TYPO_SHARE = 0.3
"""Of the recorded addresses, those with one slip: street name, house number, postal code or
phone."""
COMBINATION_SHARE = 0.12
"""Studies (of MPI patients, not twins) given one of ``COMBINATIONS`` instead of random errors:
the errors that together hide a patient from every single key."""

OTHER_SITES = {"NORTHCLINIC": "N", "STHOSP": "SH-", "WESTIMAGING": "W", "LAKEORTHO": ""}
TRAUMA_NAMES = {
    "M": (("DOE", "JOHN"), ("UNKNOWN", "MALE")),
    "F": (("DOE", "JANE"), ("UNKNOWN", "FEMALE")),
}
TRAUMA_CODES = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL")
EXAMS = (
    ("CT", "CT HEAD W/O CONTRAST"),
    ("CT", "CT CHEST W/O CONTRAST"),
    ("CT", "CT ABDOMEN PELVIS W CONTRAST"),
    ("CR", "XR CHEST 2 VIEWS"),
    ("DX", "XR HAND 3 VIEWS LEFT"),
    ("MR", "MR BRAIN W/WO"),
    ("MR", "MR LUMBAR SPINE W/O"),
    ("US", "US ABDOMEN COMPLETE"),
    ("MG", "MAMMO SCREENING BILAT"),
    ("NM", "NM BONE SCAN WHOLE BODY"),
)
_KEYS = ("QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM")
NEIGHBOURS = {
    key: row[max(0, i - 1) : i] + row[i + 1 : i + 2] for row in _KEYS for i, key in enumerate(row)
}
"""Keys left and right of each letter: substitutions are slips of the finger."""
LAST_BIRTH = date(2024, 12, 31)
"""The latest birth date of synthetic.people()."""
FIRST_STUDY, LAST_STUDY = date(2012, 1, 1), date(2026, 6, 30)


@dataclass(frozen=True, slots=True)
class Error:
    """A kind of error in what the PACS recorded, and the fields it changes."""

    label: str
    weight: float
    fields: frozenset[str]


ERRORS = {
    "typo_family": Error("typo", 16, frozenset({"family"})),
    "typo_given": Error("typo", 14, frozenset({"given"})),
    "nickname": Error("nickname", 12, frozenset({"given"})),
    "swap": Error("swap", 8, frozenset({"family", "given"})),
    "middle_swap": Error("middle_swap", 5, frozenset({"given", "middle"})),
    "transposed_dob": Error("transposed_dob", 8, frozenset({"birth"})),
    "dob_typo": Error("dob_typo", 8, frozenset({"birth"})),
    "married": Error("married", 10, frozenset({"family"})),
    "no_sex": Error("no_sex", 6, frozenset({"sex"})),
    "no_dob": Error("no_dob", 5, frozenset({"birth"})),
    "initial": Error("initial", 6, frozenset({"given"})),
    "initials": Error("initials", 0, frozenset({"given", "middle"})),
}
"""Errors by name; weight 0: only in ``COMBINATIONS``."""
COMBINATIONS = {
    "nodob_married": (("no_dob", "married"), 3),
    "nodob_typo_family": (("no_dob", "typo_family"), 3),
    "initials_typo_family": (("initials", "typo_family"), 2),
    "initials_dob_typo": (("initials", "dob_typo"), 2),
    "dob_typo_nickname": (("dob_typo", "nickname"), 3),
    "dob_typo_married": (("dob_typo", "married"), 3),
}
"""Error combinations (label: errors, weight) the study may be given together (those that do
not apply to the person are skipped: a married name only for women, a nickname only where
the name has one)."""
GIVEN_NAME_ERRORS = {"typo_given", "middle_swap", "initial", "initials"}
"""Errors a twin's study is spared: the given name is all that tells twins apart."""


@dataclass
class Population:
    """What the MPI leaves for the studies: a sample of its patients and the hard negatives."""

    sample: list[Person] = field(default_factory=list)
    pairs: list[tuple[str, Person, Person]] = field(default_factory=list)
    common: list[Person] = field(default_factory=list)
    common_seen: int = 0

    def siblings(self) -> dict[str, tuple[str, str]]:
        """MRN -> (kind, the other MRN of its pair)."""
        found = {}
        for kind, first, second in self.pairs:
            found[first.mrn] = (kind, second.mrn)
            found[second.mrn] = (kind, first.mrn)
        return found


def _other_name(pool: list[str] | tuple[str, ...], draw: Iterator[str], avoid: str) -> str:
    """The first name drawn that is not ``avoid`` (else the first of the pool)."""
    for name in draw:
        if name != avoid:
            return name
    return next(name for name in pool if name != avoid)


def _draws(pools: Pools, sex: str, rng: random.Random, initial: str = "") -> Iterator[str]:
    """Given names of that sex in their frequencies (the first 50 draws: with that initial)."""
    table = pools.female if sex == "F" else pools.male
    names = table.draw(rng, 100)
    if initial:
        yield from (name for name in names[:50] if name[0] == initial)
    yield from names[50:]


def _first_twin(person: Person, rng: random.Random, pools: Pools) -> tuple[Person, str, str]:
    """The first twin (renamed when the pair is named alike) and the other's given name, sex."""
    mode = rng.random()
    if mode < 0.2:
        pair = rng.choice(SIMILAR_TWINS)
        (given, sex), (other, other_sex) = pair if rng.random() < 0.5 else pair[::-1]
        return replace(person, given_name=given, sex=sex), other, other_sex
    sex = person.sex if rng.random() < 0.65 else "MF"[person.sex == "M"]
    initial = person.given_name[0] if mode < 0.45 else ""
    table = pools.female if sex == "F" else pools.male
    other = _other_name(table.values, _draws(pools, sex, rng, initial), person.given_name)
    return person, other, sex


def _years_apart(birth: str, rng: random.Random) -> str:
    """A birth date 20 to 40 years from ``birth``: the son's, or the father's if that's late."""
    born = date.fromisoformat(birth)
    gap = timedelta(days=rng.randint(20 * 365, 40 * 365))
    return (born + gap if born + gap <= LAST_BIRTH else born - gap).isoformat()


def _sibling(
    kind: str, first: Person, person: Person, given: str, sex: str, rng: random.Random
) -> Person:
    """``person`` made the twin or Jr/Sr of ``first``: same family, household and phone."""
    return replace(
        person,
        family_name=first.family_name,
        given_name=given,
        middle_name=person.middle_name if kind == TWIN else first.middle_name,
        birth_date=first.birth_date if kind == TWIN else _years_apart(first.birth_date, rng),
        sex=sex,
        street=first.street,
        city=first.city,
        state=first.state,
        postal_code=first.postal_code,
        phone=first.phone,
    )


def write_mpi(path: Path, count: int, *, seed: int, pools: Pools, sample: int) -> Population:
    """The MPI export (streamed), and what the studies need of it."""
    rng = random.Random(f"mpi-{seed}")
    sampled = set(rng.sample(range(count), min(count, sample)))
    found = Population()
    pending: tuple[str, Person, str, str] | None = None
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(MPI_COLUMNS)
        stream = people(count, seed=seed, first_mrn=FIRST_MRN, pools=pools, full_middle=0.3)
        for index, person in enumerate(stream):
            if pending:
                kind, first, given, sex = pending
                person = _sibling(kind, first, person, given, sex, rng)
                found.pairs.append((kind, first, person))
                pending = None
            else:
                if rng.random() < COMMON_SHARE:
                    person = replace(
                        person,
                        family_name=rng.choice(COMMON_FAMILIES),
                        given_name=rng.choice(COMMON_GIVEN[person.sex]),
                    )
                    # Reservoir sample: namesakes for absent patients, from the whole MPI.
                    found.common_seen += 1
                    if len(found.common) < 5000:
                        found.common.append(person)
                    elif (slot := rng.randrange(found.common_seen)) < 5000:
                        found.common[slot] = person
                roll = rng.random()
                if roll < TWIN_SHARE / 2:
                    person, given, sex = _first_twin(person, rng, pools)
                    pending = (TWIN, person, given, sex)
                # Only men start a Jr/Sr pair: twice the rate, for JUNIOR_SHARE of all.
                elif roll < TWIN_SHARE / 2 + JUNIOR_SHARE and person.sex == "M":
                    pending = (JUNIOR, person, person.given_name, "M")
            if index in sampled:
                found.sample.append(person)
            writer.writerow(person.row())
    rng.shuffle(found.sample)
    return found


def typo(text: str, rng: random.Random) -> str:
    """One slip: a letter replaced by its neighbour on the keyboard, two swapped, one dropped."""
    letters = [i for i, c in enumerate(text) if c in NEIGHBOURS]
    for _ in range(20):
        i = rng.choice(letters)
        roll = rng.random()
        if roll < 0.4:
            changed = text[:i] + rng.choice(NEIGHBOURS[text[i]]) + text[i + 1 :]
        elif roll < 0.7 and i + 1 < len(text):
            changed = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        elif len(text) > 3:
            changed = text[:i] + text[i + 1 :]
        else:
            continue
        if changed != text:
            return changed
    return text


def _valid_birth(digits: str) -> str | None:
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
    return day.isoformat() if date(1850, 1, 1) <= day <= LAST_BIRTH else None


def dob_typo(birth: str, rng: random.Random) -> str:
    """One digit of the birth date mistyped (still a calendar date)."""
    digits = birth.replace("-", "")
    for _ in range(50):
        i = rng.randrange(2, 8)
        changed = _valid_birth(digits[:i] + rng.choice("0123456789") + digits[i + 1 :])
        if changed and changed != birth:
            return changed
    return birth


def mrn_typo(mrn: str, live: range, rng: random.Random) -> str:
    """The MRN with one digit dropped, doubled or two swapped, that names nobody in the MPI."""
    for _ in range(50):
        i = rng.randrange(len(mrn))
        roll = rng.random()
        if roll < 0.4:
            changed = mrn[:i] + mrn[i + 1 :]
        elif roll < 0.8:
            changed = mrn[:i] + mrn[i] + mrn[i:]
        else:
            changed = mrn[:i] + mrn[i + 1 : i + 2] + mrn[i] + mrn[i + 2 :]
        if changed != mrn and not (changed[0] != "0" and int(changed) in live):
            return changed
    return mrn + "0"


class Recorder:
    """Records studies of patients as a PACS does: identifiers and demographics with errors."""

    def __init__(self, seed: int, pools: Pools, live: range) -> None:
        self.rng = random.Random(f"studies-{seed}")
        self.pools = pools
        self.live = live
        self.nicknamer = NickNamer()
        self._nicknames: dict[str, list[str]] = {}

    def nicknames(self, given: str, avoid: str) -> list[str]:
        """Nicknames of ``given`` (ROBERT: BOB, ROB …) other than ``avoid`` (a twin's name)."""
        if given not in self._nicknames:
            found = self.nicknamer.nicknames_of(given.lower())
            self._nicknames[given] = sorted(name.upper() for name in found if name.isalpha())
        return [name for name in self._nicknames[given] if name != avoid]

    def identifier(self, person: Person | None) -> tuple[str, str, str]:
        """(patient_id, issuer, label): never a live MPI identifier."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            issuer, prefix = rng.choice(list(OTHER_SITES.items()))
            same_digits = person is not None and rng.random() < 0.25
            value = person.mrn if same_digits else f"{prefix}{rng.randrange(10**5, 10**7)}"
            return value, issuer, "other_site"
        if roll < 0.85 and person is not None:
            return mrn_typo(person.mrn, self.live, rng), ISSUER, "mrn_typo"
        return "", "", "no_id"

    def errors(self, person: Person, spared: set[str], avoid: str) -> list[str]:
        """0 to 3 errors that apply to ``person``, touching different fields; none of them
        makes the given name ``avoid`` (the name of a twin)."""
        rng = self.rng
        count = rng.choices(range(len(ERROR_COUNTS)), weights=ERROR_COUNTS)[0]
        day, month = person.birth_date[8:], person.birth_date[5:7]
        applies = self._applies(person, avoid)
        applies["transposed_dob"] = day <= "12" and day != month
        chosen: list[str] = []
        used: set[str] = set()
        while len(chosen) < count:
            names = [
                name
                for name, error in ERRORS.items()
                if error.weight
                and name not in spared
                and applies.get(name, True)
                and not error.fields & used
            ]
            if not names:
                break
            name = rng.choices(names, weights=[ERRORS[n].weight for n in names])[0]
            chosen.append(name)
            used |= ERRORS[name].fields
        return chosen

    def _applies(self, person: Person, avoid: str) -> dict[str, bool]:
        """Errors that apply only to some people (the others apply to everyone)."""
        return {
            "nickname": bool(self.nicknames(person.given_name, avoid)),
            "middle_swap": len(person.middle_name) > 1,
            "married": person.sex == "F",
        }

    def combination(self, person: Person) -> tuple[str, list[str]] | None:
        """One of ``COMBINATIONS`` that applies to ``person`` (label, errors), or None."""
        applies = self._applies(person, "")
        found = [
            (label, weight, list(errors))
            for label, (errors, weight) in COMBINATIONS.items()
            if all(applies.get(error, True) for error in errors)
        ]
        if not found:
            return None
        label, _, errors = self.rng.choices(found, weights=[w for _, w, _ in found])[0]
        return label, errors

    def address_typo(self, recorded: dict[str, str]) -> None:
        """One slip in the recorded address: a street-name letter, a house-number, postal-code
        or phone digit."""
        rng = self.rng
        field = rng.choice(("street", "street", "postal_code", "phone"))
        value = recorded[field]
        if field == "street" and rng.random() < 0.5:
            number, _, name = value.partition(" ")
            recorded[field] = f"{number} {typo(name, rng)}"
            return
        digits = [i for i, c in enumerate(value) if c.isdigit()]
        i = rng.choice(digits)
        wrong = rng.choice([d for d in "0123456789" if d != value[i]])
        recorded[field] = value[:i] + wrong + value[i + 1 :]

    def demographics(
        self, person: Person, errors: list[str], avoid: str
    ) -> tuple[dict[str, str], bool]:
        """What the PACS recorded of ``person``, with ``errors``; whether its address has a
        slip."""
        rng = self.rng
        middle = person.middle_name
        roll = rng.random()
        recorded = {
            "family_name": person.family_name,
            "given_name": person.given_name,
            "middle_name": middle[:1] if roll < 0.5 else middle if roll < 0.75 else "",
            "birth_date": person.birth_date,
            "sex": person.sex,
        }
        slip = False
        if rng.random() < ADDRESS_SHARE:
            recorded |= {c: getattr(person, c) for c in ADDRESS_COLUMNS}
            slip = rng.random() < ADDRESS_TYPO_SHARE
            if slip:
                self.address_typo(recorded)
        for error in errors:
            self._apply(error, recorded, person, avoid)
        return recorded, slip

    def _apply(self, error: str, recorded: dict[str, str], person: Person, avoid: str) -> None:
        rng = self.rng
        if error == "typo_family":
            recorded["family_name"] = typo(person.family_name, rng)
        elif error == "typo_given":
            recorded["given_name"] = typo(person.given_name, rng)
        elif error == "nickname":
            recorded["given_name"] = rng.choice(self.nicknames(person.given_name, avoid))
        elif error == "swap":
            recorded["family_name"], recorded["given_name"] = person.given_name, person.family_name
        elif error == "middle_swap":
            recorded["given_name"], recorded["middle_name"] = person.middle_name, person.given_name
        elif error == "transposed_dob":
            year, month, day = person.birth_date.split("-")
            recorded["birth_date"] = f"{year}-{day}-{month}"
        elif error == "dob_typo":
            recorded["birth_date"] = dob_typo(person.birth_date, rng)
        elif error == "married":
            new = _other_name(
                self.pools.family.values, iter(self.pools.family.draw(rng, 5)), person.family_name
            )
            hyphenated = rng.random() < 0.3
            recorded["family_name"] = f"{person.family_name}-{new}" if hyphenated else new
        elif error == "no_sex":
            recorded["sex"] = ""
        elif error == "no_dob":
            recorded["birth_date"] = ""
        elif error == "initial":
            recorded["given_name"] = person.given_name[0]
        elif error == "initials":
            recorded["given_name"] = person.given_name[0]
            recorded["middle_name"] = person.middle_name[:1]

    def trauma(self, person: Person, number: int) -> dict[str, str]:
        """A placeholder registration of an unidentified patient."""
        rng = self.rng
        if rng.random() < 0.3:
            family, given = "TRAUMA", rng.choice(TRAUMA_CODES)
            patient_id = f"TRAUMA{number:06d}"
        else:
            family, given = rng.choice(TRAUMA_NAMES[person.sex])
            patient_id = f"TR{number:06d}"
        return {
            "patient_id": patient_id,
            "issuer": ISSUER,
            "family_name": family,
            "given_name": given,
            "birth_date": "1900-01-01" if rng.random() < 0.5 else "",
            "sex": person.sex if rng.random() < 0.7 else "U",
        }

    def exam(self, number: int, birth: str) -> dict[str, str]:
        """Study UID, accession, date (after the birth) and procedure."""
        rng = self.rng
        modality, description = rng.choice(EXAMS)
        first = max(FIRST_STUDY, date.fromisoformat(birth))
        day = first + timedelta(days=rng.randrange((LAST_STUDY - first).days + 1))
        return {
            "study_uid": f"{UID_ROOT}.{number + 1}",
            "accession": f"ACC{number + 1:09d}",
            "study_date": day.isoformat(),
            "modality": modality,
            "description": description,
        }


def _absent_twin(base: Person, person: Person, rng: random.Random, pools: Pools) -> Person:
    """An unregistered twin of an MPI patient: their family, birth date and household."""
    given = _other_name(
        (pools.female if person.sex == "F" else pools.male).values,
        _draws(pools, person.sex, rng),
        base.given_name,
    )
    return _sibling(TWIN, base, person, given, person.sex, rng)


def _namesake(base: Person, person: Person, rng: random.Random) -> Person:
    """Someone else with an MPI patient's (very common) name, born years apart."""
    born = date.fromisoformat(base.birth_date)
    gap = timedelta(days=rng.randint(3 * 365, 30 * 365))
    birth = born + gap if born + gap <= LAST_BIRTH else born - gap
    return replace(
        person,
        family_name=base.family_name,
        given_name=base.given_name,
        sex=base.sex,
        birth_date=birth.isoformat(),
    )


def generate(out: Path, patients: int, orphans: int, seed: int = 1) -> dict[str, float]:
    """Write the benchmark's files into ``out``; seconds spent on the MPI and the studies."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    start = time.perf_counter()
    pools = Pools(seed)
    population = write_mpi(out / "mpi.csv", patients, seed=seed, pools=pools, sample=orphans)
    mpi_seconds = time.perf_counter() - start
    siblings = population.siblings()
    members = {p.mrn: p for _, first, second in population.pairs for p in (first, second)}
    pairs = {kind: [p for p in population.pairs if p[0] == kind] for kind in (TWIN, JUNIOR)}
    live = range(FIRST_MRN, FIRST_MRN + patients)
    recorder = Recorder(seed, pools, live)
    rng = recorder.rng
    absent_people = people(10**9, seed=seed + 7919, first_mrn=0, pools=pools, full_middle=0.3)
    ordered = (ORDER_SHARE - TRAUMA_LINKED) / (1 - TRAUMA_LINKED - TRAUMA_UNLINKED - ABSENT)
    sampled = iter(population.sample * (orphans // max(1, len(population.sample)) + 1))
    files = {name: (out / name).open("w", newline="", encoding="utf-8") for name in FILES[1:5]}
    try:
        studies, orders, truth, twins = (csv.writer(files[name]) for name in FILES[1:5])
        studies.writerow(STUDY_COLUMNS)
        orders.writerow(("accession", "mrn"))
        truth.writerow(("study_uid", "mrn", "kind", "trap"))
        twins.writerow(("mrn", "sibling_mrn", "kind"))
        twins.writerows((first.mrn, second.mrn, kind) for kind, first, second in population.pairs)
        for number in range(orphans):
            roll = rng.random()
            labels: list[str] = []
            trap = twin = ""
            if roll < TRAUMA_LINKED + TRAUMA_UNLINKED:
                linked = roll < TRAUMA_LINKED
                person = next(sampled) if linked else next(absent_people)
                recorded = recorder.trauma(person, number)
                labels.append("trauma_linked" if linked else "trauma")
                in_mpi = linked
            else:
                roll -= TRAUMA_LINKED + TRAUMA_UNLINKED
                in_mpi = roll >= ABSENT
                if not in_mpi:
                    labels.append("absent")
                    person = next(absent_people)
                    profile = rng.random()
                    if profile < 0.25:
                        base = next(sampled)
                        person, trap = _absent_twin(base, person, rng, pools), base.mrn
                        twin = base.given_name
                        labels.append("twin_trap")
                    elif profile < 0.5 and population.common:
                        base = rng.choice(population.common)
                        person, trap = _namesake(base, person, rng), base.mrn
                        labels.append("namesake_trap")
                else:
                    roll -= ABSENT
                    kind = TWIN if roll < TWIN_STUDIES else JUNIOR
                    if roll < TWIN_STUDIES + JUNIOR_STUDIES and pairs[kind]:
                        pair = rng.choice(pairs[kind])
                        person = pair[1 + (rng.random() < 0.5)]
                    else:
                        person = next(sampled)
                    if person.mrn in siblings:
                        kind, trap = siblings[person.mrn]
                        labels.append(kind)
                    elif (person.family_name, person.given_name) in COMMON_NAMES:
                        labels.append("common_name")
                patient_id, issuer, id_label = recorder.identifier(person if in_mpi else None)
                labels.append(id_label)
                spared: set[str] = set()
                if TWIN in labels or "twin_trap" in labels:
                    spared = GIVEN_NAME_ERRORS
                    twin = twin or members[trap].given_name
                elif JUNIOR in labels:
                    spared = {"no_dob"}
                combination = None
                if not spared and in_mpi and rng.random() < COMBINATION_SHARE:
                    combination = recorder.combination(person)
                if combination is not None:
                    labels.append(combination[0])
                    errors = combination[1]
                else:
                    errors = recorder.errors(person, spared, twin)
                labels.extend(dict.fromkeys(ERRORS[e].label for e in errors) or ["clean"])
                recorded = {"patient_id": patient_id, "issuer": issuer}
                demographics, slip = recorder.demographics(person, errors, twin)
                recorded |= demographics
                if slip:
                    labels.append("address_typo")
            row = recorder.exam(number, person.birth_date) | recorded
            studies.writerow(row.get(column, "") for column in STUDY_COLUMNS)
            mrn = person.mrn if in_mpi else ""
            truth.writerow((row["study_uid"], mrn, "+".join(labels), trap))
            if in_mpi and ("trauma_linked" in labels or rng.random() < ordered):
                orders.writerow((row["accession"], mrn))
    finally:
        for file in files.values():
            file.close()
    manifest = {"patients": patients, "orphans": orphans, "seed": seed}
    (out / "manifest.json").write_text(json.dumps(manifest) + "\n")
    return {"mpi": mpi_seconds, "total": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--orphans", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.patients < 1 or args.orphans < 0:
        parser.error("--patients must be at least 1, --orphans not negative")
    seconds = generate(args.out, args.patients, args.orphans, args.seed)
    print(
        f"{args.out}: {args.patients} patients, {args.orphans} orphaned studies"
        f" in {seconds['total']:.1f}s (MPI {seconds['mpi']:.1f}s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
