"""
TLS handshake load generator for the handshake benchmark (run as a
subprocess by run.py; see benchmarks/handshakes.py).

    python handshakeclient.py PORT MODE CONCURRENCY WARMUP SECONDS [resume]

Keeps CONCURRENCY connections in flight: each connects, does a full TLS
handshake (certificate not verified: 127.0.0.1), then waits for the
server's first line, and is closed (close_notify, then the socket) once it
has it; a new one starts at once.  A handshake counts when that line has
arrived, so both servers are measured to the same point: MODE ``greeting``
waits for the line the server sends by itself (echofile's ``#Server
Ready.``); MODE ``rev`` first sends ``x\\n`` and waits for the answer
(``openssl s_server -rev``, which says nothing first).  Either way the
line arrives two round trips after the connect.  With ``resume`` each slot
offers the session of its own previous connection (single-use TLS 1.3
tickets are never offered twice), and the warm-up lasts until every slot
has one.  Prints one JSON line: counts, the
measured seconds (and the count with the warm-up), p50/p99 of connect-to-line latency, how many were
resumed, and the client's own CPU seconds.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import ssl
import sys
import time

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def cpuSeconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Slot:
    """One connection at a time, one after the other; keeps the last session for the next."""

    def __init__(self, run: "Run") -> None:
        self.run = run
        self.session: ssl.SSLSession | None = None
        self.start()

    def start(self) -> None:
        self.began = time.perf_counter()
        self.buffer = b""
        self.state = "connect"
        raw = socket.socket()
        raw.setblocking(False)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.connect_ex(("127.0.0.1", self.run.port))
        self.sock: socket.socket = raw
        self.run.selector.register(raw, WRITE, self)

    def step(self) -> None:
        if self.state == "connect":
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.fail()
                return
            self.run.selector.unregister(self.sock)
            session = self.session if self.run.resume else None
            self.sock = self.run.context.wrap_socket(self.sock, do_handshake_on_connect=False, session=session)
            self.state = "handshake"
            self.run.selector.register(self.sock, READ | WRITE, self)
        try:
            if self.state == "handshake":
                self.sock.do_handshake()
                if self.run.request:
                    self.sock.send(self.run.request)
                self.state = "line"
                self.run.selector.modify(self.sock, READ, self)
            while self.state == "line":
                data = self.sock.recv(4096)
                if not data:
                    self.fail()
                    return
                self.buffer += data
                if b"\n" in self.buffer:
                    self.finish()
                    return
        except ssl.SSLWantReadError:
            self.run.selector.modify(self.sock, READ, self)
        except ssl.SSLWantWriteError:
            self.run.selector.modify(self.sock, WRITE, self)
        except (OSError, ssl.SSLError):
            self.fail()

    def finish(self) -> None:
        self.run.done(self, time.perf_counter() - self.began, self.sock.session_reused)
        self.session = self.sock.session
        self.close()
        self.start()

    def fail(self) -> None:
        self.run.errors += 1
        self.close()
        self.start()

    def close(self) -> None:
        self.run.selector.unregister(self.sock)
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock.unwrap()  # our close_notify; the peer's is not waited for
            except (OSError, ssl.SSLError, ValueError):
                pass
        self.sock.close()


class Run:
    def __init__(self, port: int, mode: str, resume: bool) -> None:
        self.port = port
        self.request = b"x\n" if mode == "rev" else b""
        self.resume = resume
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.selector = selectors.EpollSelector()
        self.measuring = False
        self.latencies: list[float] = []
        self.reused = 0
        self.errors = 0
        self.all = 0  # warm-up included: what the server's CPU time is divided by

    def done(self, slot: Slot, latency: float, reused: bool) -> None:
        self.all += 1
        if self.measuring:
            self.latencies.append(latency)
            self.reused += reused

    def loop(self, until: float, slots: list[Slot] = ()) -> None:
        """Run until C{until}, and (resumed runs) until each of C{slots} has a session to offer."""
        giveUp = until + 30  # a server that never completes a handshake must not hang the run
        while time.perf_counter() < until or (any(slot.session is None for slot in slots)
                                              and time.perf_counter() < giveUp):
            for key, _ in self.selector.select(0.5):
                key.data.step()


def main(port: int, mode: str, concurrency: int, warmup: float, seconds: float, resume: bool) -> None:
    run = Run(port, mode, resume)
    slots = [Slot(run) for _ in range(concurrency)]
    run.loop(time.perf_counter() + warmup, slots if resume else [])
    run.measuring = True
    cpu0, started = cpuSeconds(), time.perf_counter()
    run.loop(started + seconds)
    elapsed, cpu = time.perf_counter() - started, cpuSeconds() - cpu0
    run.measuring = False
    for slot in slots:
        slot.close()
    latencies = sorted(run.latencies)

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6 if latencies else float("nan")

    print(json.dumps({
        "handshakes": len(latencies), "seconds": elapsed, "reused": run.reused, "errors": run.errors,
        "all_handshakes": run.all,
        "p50_us": percentile(0.5), "p99_us": percentile(0.99), "client_cpu": cpu,
    }))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]),
         sys.argv[6:7] == ["resume"])
