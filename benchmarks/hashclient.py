"""
HASH and RESUME client for the benchmarks (run as a subprocess by run.py).

    python hashclient.py hash PORT PASSWORD NAME REPEATS [TOUCH_PATH]
    python hashclient.py loop PORT PASSWORD NAME SECONDS
    python hashclient.py resume PORT PASSWORD NAME OFFSET REPEATS

- ``hash``: REPEATS HASH commands on one connection, the seconds each took
  (from sending HASH to the reply); with TOUCH_PATH the file's times are
  set before each, so every HASH misses the cache.
- ``loop``: HASH again and again for SECONDS (background load).
- ``resume``: REPEATS ``RESUME OFFSET NAME`` (``FILE NAME`` when OFFSET is
  -1), the seconds each took and every byte that came off the socket for it.

Prints one JSON line.
"""

import json
import os
import socket
import sys
import time

from fileclient import Reader


class CountingReader(Reader):
    """A Reader that counts every byte received from the socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.received = 0
        recv, recv_into = sock.recv, sock.recv_into

        def countingRecv(n):
            data = recv(n)
            self.received += len(data)
            return data

        def countingRecvInto(view, n):
            count = recv_into(view, n)
            self.received += count
            return count

        self.sock = type("Counted", (), {"recv": staticmethod(countingRecv), "recv_into": staticmethod(countingRecvInto)})()


def session(port: int, password: str):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = CountingReader(sock)
    assert reader.line().startswith(b"#"), "no greeting"
    sock.sendall(f"AUTH {password}\n".encode())
    answer = reader.line()
    assert answer == b"#You are logged in.", answer
    return sock, reader


def hashOnce(sock, reader, name: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    sock.sendall(f"HASH {name}\n".encode())
    answer = reader.line()
    elapsed = time.perf_counter() - started
    assert answer.startswith(b"#SHA-256 of "), answer
    return elapsed, answer


def main(argv: list[str]) -> None:
    mode, port, password, name = argv[0], int(argv[1]), argv[2], argv[3]
    sock, reader = session(port, password)
    result: dict = {}
    if mode == "hash":
        repeats = int(argv[4])
        touch = argv[5] if len(argv) > 5 else None
        seconds, answers = [], set()
        for n in range(repeats):
            if touch:
                os.utime(touch, ns=(n + 1, n + 1))  # changes the key (mtime and ctime): a cache miss
            elapsed, answer = hashOnce(sock, reader, name)
            seconds.append(elapsed)
            answers.add(answer.rsplit(b" ", 1)[1].decode())
        result = {"seconds": seconds, "digests": sorted(answers)}
    elif mode == "loop":
        deadline = time.monotonic() + float(argv[4])
        count = 0
        while time.monotonic() < deadline:
            hashOnce(sock, reader, name)
            count += 1
        result = {"hashes": count}
    elif mode == "resume":
        offset, repeats = int(argv[4]), int(argv[5])
        seconds, wire, bodies = [], [], []
        command = f"FILE {name}\n" if offset < 0 else f"RESUME {offset} {name}\n"
        for _ in range(repeats):
            before = reader.received - len(reader.pending)
            started = time.perf_counter()
            sock.sendall(command.encode())
            header = reader.line()
            assert header.startswith(b"#Sending"), header
            size = int(header.rsplit(b"(", 1)[1].split(b" ", 1)[0])
            reader.skip(size)
            assert reader.line() == b"", "body not followed by CRLF"
            assert reader.line().startswith(b"#File"), "no trailer"
            seconds.append(time.perf_counter() - started)
            wire.append(reader.received - before - len(reader.pending))
            bodies.append(size)
        result = {"seconds": seconds, "wire_bytes": wire, "body_bytes": bodies}
    sock.sendall(b"QUIT\n")
    sock.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
