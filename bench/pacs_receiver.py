"""A fast MLLP receiver for bench/pipeline.py: ACKs every message, records what arrived.

It answers AA from the bytes of MSH-10 (no parsing), and on SIGTERM writes one line per message
received: arrival time (time.time()), connection number, MSH-10, PID-3.1.

Run: python bench/pacs_receiver.py PORT OUTFILE
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time


def main(port: int, out: str) -> None:
    arrivals: list[tuple[float, int, bytes, bytes]] = []
    connections = 0

    class Receiver(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nonlocal connections
            connections += 1
            self.number = connections
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
                msh, _, rest = message.partition(b"\r")
                control_id = msh.split(b"|")[9]
                pid = rest[rest.find(b"PID|") :].split(b"|")[3].split(b"^")[0]
                arrivals.append((time.time(), self.number, control_id, pid))
                self.transport.write(  # type: ignore[attr-defined]
                    b"\x0bMSH|^~\\&|PACS|RAD|CW|HOSP|||ACK|A|P|2.5.1\rMSA|AA|"
                    + control_id
                    + b"\r\x1c\r"
                )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await loop.create_server(Receiver, "127.0.0.1", port)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    asyncio.run(serve())
    with open(out, "w") as file:
        for moment, number, control_id, pid in arrivals:
            file.write(f"{moment:.6f} {number} {control_id.decode()} {pid.decode()}\n")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
