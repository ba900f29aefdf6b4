"""
Concurrent-downloads load generator (run as a subprocess by run.py; see
benchmarks/downloads.py).  One asyncio process (uvloop when installed)
that speaks both protocols:

    python downloadclient.py echofile PORT PASSWORD NAME COUNT
    python downloadclient.py ftp PORT PASSWORD NAME COUNT

First opens COUNT sessions and logs each in (at most 256 at a time; not
timed): echofile's greeting and AUTH; FTP's 220, USER/PASS and TYPE I.
Then, all at once, each downloads NAME once, and the clock runs from that
moment to the end of each download:

- echofile: ``FILE NAME``, the header, the body, the CRLF and the trailer;
- FTP: ``PASV``, a data connection to the port it names, ``RETR NAME``,
  the data until the server closes it, and the ``226`` on the control
  connection (a passive download is one more round trip and one more
  connection than FILE: that is the protocol).

Every body is counted to the byte (and read into one shared buffer: the
client does not keep or copy the data).  Prints one JSON line: the bytes,
the seconds until the last download ended, p50/p99 of the completion times,
the client's own CPU seconds in the timed part, and the setup time.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
import time
from collections import deque

BUFFER = bytearray(256 * 1024)  # every connection reads into this one buffer; the bytes are counted, not kept
VIEW = memoryview(BUFFER)
SETUP_AT_ONCE = 256


def cpuSeconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stream(asyncio.BufferedProtocol):
    """Lines (CRLF or LF) and counted bodies off one connection, without copying the bodies."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.bodyLeft = 0
        self.waiter: asyncio.Future | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.received = 0  # body bytes, for a data connection read to its end

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return VIEW

    def buffer_updated(self, nbytes: int) -> None:
        start = 0
        if self.bodyLeft:
            start = min(nbytes, self.bodyLeft)
            self.bodyLeft -= start
            self.received += start
        if start < nbytes:
            self.pending += VIEW[start:nbytes]
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _wait(self) -> None:
        if self.closed.done():
            raise EOFError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    async def line(self) -> bytes:
        while True:
            end = self.pending.find(b"\n")
            if end >= 0:
                line = bytes(self.pending[:end]).rstrip(b"\r")
                del self.pending[:end + 1]
                return line
            await self._wait()

    async def body(self, size: int) -> None:
        take = min(size, len(self.pending))
        del self.pending[:take]
        self.received += take
        self.bodyLeft = size - take
        while self.bodyLeft:
            await self._wait()

    def countAll(self) -> None:
        """A data connection: from now on count everything (until the server closes it, L{closed})."""
        self.received += len(self.pending)
        self.pending.clear()
        self.bodyLeft = 1 << 62


async def connect(port: int) -> Stream:
    _, stream = await asyncio.get_running_loop().create_connection(Stream, "127.0.0.1", port)
    return stream


class EchofileSession:
    def __init__(self, port: int, password: str, name: str) -> None:
        self.port, self.password, self.name = port, password, name

    async def setup(self) -> None:
        self.stream = await connect(self.port)
        greeting = await self.stream.line()
        assert greeting.startswith(b"#"), greeting
        self.stream.transport.write(f"AUTH {self.password}\r\n".encode())
        answer = await self.stream.line()
        assert answer.startswith(b"#You are logged in"), answer

    async def download(self) -> int:
        self.stream.transport.write(f"FILE {self.name}\r\n".encode())
        header = await self.stream.line()
        assert header.startswith(b"#Sending"), header
        size = int(header.rsplit(b"(", 1)[1].split(b" ", 1)[0])
        await self.stream.body(size)
        assert await self.stream.line() == b"", "body not followed by CRLF"
        trailer = await self.stream.line()
        assert trailer.startswith(b"#File"), trailer
        return size

    def close(self) -> None:
        self.stream.transport.write(b"QUIT\r\n")
        self.stream.transport.close()


PASV = re.compile(rb"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")


class FTPSession:
    def __init__(self, port: int, password: str, name: str) -> None:
        self.port, self.password, self.name = port, password, name

    async def reply(self) -> bytes:
        line = await self.control.line()
        if line[3:4] == b"-":  # a multi-line reply ends with "NNN "
            while not (await self.control.line()).startswith(line[:3] + b" "):
                pass
        return line

    async def command(self, text: str, expect: bytes) -> bytes:
        self.control.transport.write(text.encode() + b"\r\n")
        answer = await self.reply()
        assert answer.startswith(expect), (text, answer)
        return answer

    async def setup(self) -> None:
        self.control = await connect(self.port)
        banner = await self.reply()
        assert banner.startswith(b"220"), banner
        await self.command("USER bench", b"331")
        await self.command(f"PASS {self.password}", b"230")
        await self.command("TYPE I", b"200")

    async def download(self) -> int:
        answer = await self.command("PASV", b"227")
        numbers = [int(n) for n in PASV.search(answer).groups()]
        data = await connect(numbers[4] * 256 + numbers[5])
        data.countAll()
        await self.command(f"RETR {self.name}", b"1")  # 125 or 150
        await data.closed
        done = await self.reply()
        assert done.startswith(b"226"), done
        return data.received

    def close(self) -> None:
        self.control.transport.write(b"QUIT\r\n")
        self.control.transport.close()


async def main(kind: str, port: int, password: str, name: str, count: int) -> None:
    make = EchofileSession if kind == "echofile" else FTPSession
    sessions = [make(port, password, name) for _ in range(count)]
    started = time.perf_counter()
    gate = asyncio.Semaphore(SETUP_AT_ONCE)

    async def setUp(session) -> None:
        async with gate:
            await session.setup()

    await asyncio.gather(*(setUp(s) for s in sessions))
    setupSeconds = time.perf_counter() - started
    finished: deque[float] = deque()
    cpu0 = cpuSeconds()
    t0 = time.perf_counter()

    async def fetch(session) -> int:
        size = await session.download()
        finished.append(time.perf_counter() - t0)
        return size

    sizes = await asyncio.gather(*(fetch(s) for s in sessions))
    seconds = time.perf_counter() - t0
    cpu = cpuSeconds() - cpu0
    for session in sessions:
        session.close()
    times = sorted(finished)
    print(json.dumps({
        "downloads": len(times), "bytes": sum(sizes), "sizes": sorted(set(sizes)), "seconds": seconds,
        "p50_s": times[len(times) // 2], "p99_s": times[min(len(times) - 1, int(0.99 * len(times)))],
        "client_cpu": cpu, "setup_s": setupSeconds,
    }))


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # plain asyncio: same protocol code, slower loop
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])))
