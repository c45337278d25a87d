"""Several engines on one PostgreSQL behind HAProxy, against SQLite single-process.

For 1, 2 and 3 ``crosswalk serve`` processes sharing one PostgreSQL (a fresh schema each run),
behind a real HAProxy on loopback, and for one engine on SQLite: ``--feeds`` senders each send
``--messages`` ADT messages in order, each waiting for its ACK; the run ends when the PACS
(a FakeReceiver) has every message. Prints the ACK rate, the end-to-end rate and p50/p99 ACK
latency. Then, with 2 engines, the routing lease holder is SIGKILLed under load and the time
until every lease it held is held again by the other engine is printed (the takeover).

    python bench/several_engines.py [--db postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--feeds 8] [--messages 300] [--lease-ttl 6]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from engine.leases.records import read_leases  # noqa: E402
from engine.store.database import open_store  # noqa: E402
from engine.testing import FakeReceiver, free_port  # noqa: E402
from tests.cluster import HAPROXY, Engines, Feed, haproxy  # noqa: E402
from tests.support import adt, config_folder, destination_yaml  # noqa: E402

ROUTES = "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n"


@contextmanager
def schema(base: str) -> Iterator[str]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{name}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def feeds_for(port: int, feeds: int, messages: int) -> list[Feed]:
    return [
        Feed(
            port,
            [
                adt(f"F{f}-{i:05d}", pid=f"PID|1||P{f}^^^GENHOSP^MR||DOE^F{f}||19800304|F")
                for i in range(messages)
            ],
        )
        for f in range(feeds)
    ]


def run(db_url: str, engines_count: int, args: argparse.Namespace, kill: bool = False) -> str:
    pacs = FakeReceiver()
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        config = config_folder(
            folder,
            ROUTES,
            endpoints=destination_yaml(pacs.port, partition_by="PID-3.1", partitions=4),
        )
        total = args.feeds * args.messages
        options = () if args.code else ("--lease-ttl", str(args.lease_ttl))
        with Engines(config, db_url, folder, *options, code=args.code) as engines:
            ports = engines.start(engines_count)
            front = free_port() if db_url.startswith("postgresql") else ports[0]
            with haproxy(front, ports, folder) if front != ports[0] else _nothing():
                time.sleep(args.lease_ttl / 4 + 0.5)  # the engines share the leases out
                feeds = feeds_for(front, args.feeds, args.messages)
                began = time.monotonic()
                for feed in feeds:
                    feed.start()
                took = ""
                if kill:
                    while sum(len(feed.acked) for feed in feeds) < total // 3:
                        time.sleep(0.01)
                    took = f"   takeover {takeover(db_url):.2f}s"
                for feed in feeds:
                    feed.join(600)
                acked = time.monotonic() - began
                pacs.wait_for(total, timeout=300)
                delivered = time.monotonic() - began
        pacs.stop()
    return (
        f"{total / acked:7.0f} msg/s acknowledged   {total / delivered:7.0f} msg/s delivered"
        f"   ({total} messages, {args.feeds} feeds){took}"
    )


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def takeover(db_url: str) -> float:
    """SIGKILL the routing lease holder; seconds until all its leases are held by another."""
    store = open_store(db_url)
    try:
        rows = [r for r in read_leases(store) if not r.expired]
        victim = next(r.holder for r in rows if r.name == "routing")
        os.kill(int(victim.split(":")[-2]), signal.SIGKILL)
        began = time.monotonic()
        while True:
            work = [r for r in read_leases(store) if not r.name.startswith("engine:")]
            if all(not r.expired and r.holder != victim for r in work):
                return time.monotonic() - began
            time.sleep(0.02)
    finally:
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=os.environ.get("CROSSWALK_TEST_POSTGRES_URL"))
    parser.add_argument("--feeds", type=int, default=8)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--lease-ttl", type=float, default=6.0)
    parser.add_argument(
        "--code", type=Path, help="only 1 engine on PostgreSQL, run from this source tree"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole run")
    args = parser.parse_args()
    if not args.db or HAPROXY is None:
        sys.exit("needs --db postgresql+psycopg://… and haproxy installed")
    for _ in range(args.rounds):
        if args.code:
            with schema(args.db) as url:
                print(f"{'PostgreSQL, 1, --code':<28}", run(url, 1, args), flush=True)
            continue
        with tempfile.TemporaryDirectory() as folder:
            print(f"{'SQLite, 1 engine':<28}", run(f"sqlite:///{folder}/c.db", 1, args), flush=True)
        for count in (1, 2, 3):
            with schema(args.db) as url:
                print(f"{f'PostgreSQL, {count} engine(s)':<28}", run(url, count, args), flush=True)
        with schema(args.db) as url:
            print(f"{'PostgreSQL, 2, one killed':<28}", run(url, 2, args, kill=True), flush=True)


if __name__ == "__main__":
    main()
