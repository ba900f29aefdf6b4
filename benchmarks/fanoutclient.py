"""
SAY fan-out latency: N guest sessions spread over the given files ports;
one of them says M numbered lines, one at a time; for each, the time from
sending it until the last of the N-1 others has it.  Prints one JSON line
(p50/p99 in microseconds).

    python benchmarks/fanoutclient.py --ports 8008,8018 --sessions 1000 --messages 200 --password PW
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time


class Session(asyncio.Protocol):
    def __init__(self, bench: "Bench") -> None:
        self.bench, self.buffer = bench, b""
        self.lines: asyncio.Queue[bytes] = asyncio.Queue()
        self.counting = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\r\n")
        for line in lines:
            if self.counting and line.startswith(b"*") and b": fanout " in line:
                self.bench.received(int(line.rsplit(b" ", 1)[1]))
            else:
                self.lines.put_nowait(line)


class Bench:
    def __init__(self, sessions: int) -> None:
        self.expected = sessions - 1
        self.counts: dict[int, int] = {}
        self.done: dict[int, asyncio.Future] = {}

    def received(self, number: int) -> None:
        self.counts[number] = self.counts.get(number, 0) + 1
        if self.counts[number] == self.expected:
            self.done[number].set_result(time.perf_counter())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    loop = asyncio.get_running_loop()
    bench = Bench(args.sessions)
    sessions: list[Session] = []
    started = time.perf_counter()
    for i in range(args.sessions):
        _, session = await loop.create_connection(lambda: Session(bench), "127.0.0.1", ports[i % len(ports)])
        sessions.append(session)

    async def login(session: Session) -> None:
        assert await session.lines.get() == b"#Server Ready."
        session.transport.write(f"AUTH {args.password}\r\n".encode())
        reply = await session.lines.get()
        assert reply == b"#You are logged in.", reply
        session.counting = True

    for chunk in range(0, len(sessions), 100):
        await asyncio.gather(*(login(s) for s in sessions[chunk:chunk + 100]))
    ready = time.perf_counter() - started
    sender = sessions[0]
    # Until WHO lists everyone, some sessions may not be in presence everywhere yet (Redis).
    while True:
        sender.transport.write(b"WHO\r\n")
        header = await sender.lines.get()
        count = int(header.split()[0][1:])
        for _ in range(count):
            await sender.lines.get()
        if count >= args.sessions:
            break
        await asyncio.sleep(0.1)
    latencies = []
    for number in range(args.messages):
        bench.done[number] = loop.create_future()
        sent = time.perf_counter()
        sender.transport.write(f"SAY fanout {number}\r\n".encode())
        reply = await sender.lines.get()
        assert reply == b"#Said.", reply
        latencies.append(await asyncio.wait_for(bench.done[number], 60) - sent)
    for session in sessions:
        session.transport.close()
    latencies.sort()
    print(json.dumps({
        "sessions": args.sessions, "instances": len(ports), "messages": args.messages,
        "ready_s": round(ready, 2),
        "p50_us": round(statistics.median(latencies) * 1e6),
        "p99_us": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6),
        "max_us": round(latencies[-1] * 1e6),
        "extra": sum(c - bench.expected for c in bench.counts.values()),
    }))


if __name__ == "__main__":
    asyncio.run(main())
