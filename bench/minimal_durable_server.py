"""Reference for bench/ingest.py: the least a durable MLLP server can do per message.

Finds frames by byte search, inserts the raw message into SQLite (WAL, synchronous=FULL, one
commit per message) and answers an ACK built from MSH-10. No checks, no duplicates, no indexes:
its rate is the ceiling the disk's fsync allows on this machine, not a usable engine.

Run: python bench/minimal_durable_server.py PORT DBFILE
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys


def main(port: int, path: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=full")
    db.execute("create table if not exists m(id integer primary key, raw blob)")

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                start = self.buffer.find(b"\x0b")
                end = self.buffer.find(b"\x1c", start)
                if start < 0 or end < 0:
                    return
                message, self.buffer = self.buffer[start + 1 : end], self.buffer[end + 2 :]
                db.execute("begin")
                db.execute("insert into m(raw) values(?)", (message,))
                db.execute("commit")
                control_id = message.split(b"\r", 1)[0].split(b"|")[9]
                self.transport.write(  # type: ignore[attr-defined]
                    b"\x0bMSH|^~\\&|||||||ACK|1|P|2.5\rMSA|AA|" + control_id + b"\r\x1c\r"
                )

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
