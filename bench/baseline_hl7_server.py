"""The baseline for bench/ingest.py: python-hl7's asyncio MLLP server that parses and ACKs.

It stores nothing. Run: python bench/baseline_hl7_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import hl7
from hl7.mllp import start_hl7_server


async def handle(reader, writer):  # type: ignore[no-untyped-def]
    try:
        while not writer.is_closing():
            message = await reader.readmessage()  # parses the whole message
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    async with await start_hl7_server(
        handle, host="127.0.0.1", port=port, limit=1024 * 1024, encoding="utf-8"
    ) as server:
        print("ready", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    _ = hl7  # the parser is what the baseline measures
    asyncio.run(main(int(sys.argv[1])))
