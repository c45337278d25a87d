"""Synthetic patients for benchmarks: an MPI export, and ADT messages about the same people.

Names follow real frequencies (Faker's weighted US name tables, several locales for family
names so that there are rare names as well as SMITH); birth dates, addresses and phones are
plausible. Everything is reproducible from a seed.

    python bench/synthetic.py mpi --rows 1000000 --out /tmp/mpi.csv
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path

from faker import Faker

from engine.mpi.records import DEMOGRAPHIC_COLUMNS

MPI_COLUMNS = ("mrn", "issuer", *DEMOGRAPHIC_COLUMNS)
"""The columns of the export, in the order `crosswalk mpi import` documents them."""
FAMILY_LOCALES = ("en_US", "es_MX", "vi_VN", "de_DE", "en_IE", "it_IT", "en_IN", "fr_FR")
"""Locales whose family names are mixed in, weighted like a US city's population."""
PLACEHOLDER_NAMES = {"DOE", "UNKNOWN", "TEST", "PATIENT", "TRAUMA", "NONAME"}
"""Never drawn as real names: registration desks use them for unidentified patients."""
LOCALE_SHARE = (0.62, 0.18, 0.04, 0.04, 0.03, 0.03, 0.03, 0.03)


@dataclass(frozen=True, slots=True)
class Person:
    mrn: str
    issuer: str
    family_name: str
    given_name: str
    middle_name: str
    birth_date: str
    """YYYY-MM-DD"""
    sex: str
    street: str
    city: str
    state: str
    postal_code: str
    phone: str

    def row(self) -> tuple[str, ...]:
        return tuple(getattr(self, column) for column in MPI_COLUMNS)


class _Weighted:
    """Values with cumulative weights, for fast repeated draws."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.values = list(weights)
        self.cumulative = list(accumulate(weights.values()))

    def draw(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self.values, cum_weights=self.cumulative, k=k)


def _ascii_upper(text: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


class Pools:
    """Name, street and city tables drawn from Faker's providers (built once per seed)."""

    def __init__(self, seed: int = 1) -> None:
        family: dict[str, float] = {}
        for locale, share in zip(FAMILY_LOCALES, LOCALE_SHARE, strict=True):
            provider = Faker(locale).factories[0].provider("faker.providers.person")
            names = provider.last_names
            if isinstance(names, dict):
                total = sum(names.values())
                weighted = {name: weight / total for name, weight in names.items()}
            else:
                weighted = {name: 1 / len(names) for name in names}
            for name, weight in weighted.items():
                key = _ascii_upper(name)
                plain = key.replace(" ", "").replace("-", "").replace("'", "")
                if key.isascii() and plain.isalpha() and key not in PLACEHOLDER_NAMES:
                    family[key] = family.get(key, 0.0) + weight * share
        us = Faker("en_US").factories[0].provider("faker.providers.person")
        self.family = _Weighted(family)
        self.male = _Weighted({_ascii_upper(k): v for k, v in us.first_names_male.items()})
        self.female = _Weighted({_ascii_upper(k): v for k, v in us.first_names_female.items()})
        fake = Faker("en_US")
        fake.seed_instance(seed)
        self.streets = [fake.street_name().upper() for _ in range(5000)]
        self.places = [
            (fake.city().upper(), fake.state_abbr(), fake.postcode()) for _ in range(800)
        ]


def people(
    count: int,
    *,
    seed: int = 1,
    issuer: str = "GENHOSP",
    first_mrn: int = 1000000,
    pools: Pools | None = None,
    full_middle: float = 0.0,
) -> Iterator[Person]:
    """``count`` distinct synthetic patients (MRNs first_mrn, first_mrn+1, …).

    ``pools``: tables to draw from (default: built from the seed). ``full_middle``: share of
    patients with a full middle name, out of the 60% who have one (the others an initial).
    """
    rng = random.Random(seed)
    pools = pools or Pools(seed)
    chunk = 10000
    epoch = date(1925, 1, 1)
    span = (date(2024, 12, 31) - epoch).days
    made = 0
    while made < count:
        k = min(chunk, count - made)
        families = pools.family.draw(rng, k)
        males = pools.male.draw(rng, 2 * k)
        females = pools.female.draw(rng, 2 * k)
        for index in range(k):
            female = rng.random() < 0.51
            given, middle = (
                (females[2 * index], females[2 * index + 1])
                if female
                else (males[2 * index], males[2 * index + 1])
            )
            city, state, postal = rng.choice(pools.places)
            yield Person(
                mrn=str(first_mrn + made),
                issuer=issuer,
                family_name=families[index],
                given_name=given,
                middle_name=_middle(middle, rng.random(), full_middle),
                birth_date=(epoch + timedelta(days=rng.randrange(span))).isoformat(),
                sex="F" if female else "M",
                street=f"{rng.randrange(1, 9999)} {rng.choice(pools.streets)}",
                city=city,
                state=state,
                postal_code=postal,
                phone=f"({rng.randrange(200, 999)}){rng.randrange(200, 999)}-"
                f"{rng.randrange(10000):04d}",
            )
            made += 1


def _middle(name: str, roll: float, full: float) -> str:
    return name if roll < full else name[:1] if roll < 0.6 else ""


def write_mpi_csv(path: Path, count: int, *, seed: int = 1) -> Path:
    """An MPI export of ``count`` synthetic patients, in the columns `mpi import` reads."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(MPI_COLUMNS)
        writer.writerows(person.row() for person in people(count, seed=seed))
    return path


def adt_update(person: Person, control_id: str, event_time: str) -> bytes:
    """An ADT^A08 about ``person``, with a new phone number (as the registration desk sends)."""
    birth = person.birth_date.replace("-", "")
    segments = (
        f"MSH|^~\\&|EPIC|GENHOSP|CROSSWALK|RAD|{event_time}||ADT^A08^ADT_A01|{control_id}|P|2.5.1",
        f"EVN|A08|{event_time}",
        f"PID|1||{person.mrn}^^^{person.issuer}^MR||{person.family_name}^{person.given_name}^"
        f"{person.middle_name}||{birth}|{person.sex}|||{person.street}^^{person.city}^"
        f"{person.state}^{person.postal_code}||{person.phone}",
        "PV1|1|O|RAD^^^GENHOSP",
    )
    return ("\r".join(segments) + "\r").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="what", required=True)
    mpi = commands.add_parser("mpi", help="write an MPI export (CSV)")
    mpi.add_argument("--rows", type=int, default=100000)
    mpi.add_argument("--seed", type=int, default=1)
    mpi.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write_mpi_csv(args.out, args.rows, seed=args.seed)
    print(f"{args.out}: {args.rows} patients", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
