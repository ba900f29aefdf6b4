"""
Many-sessions client for the scale benchmark (run as a subprocess by run.py).

    python scaleclient.py MODE PORT COUNT
    python scaleclient.py MODE PORT COUNT burst

MODE ``files``: open COUNT sessions and wait for every greeting.
MODE ``echo``: open COUNT sessions, then send one byte on each and wait for
every answer.  Prints a JSON line with the timings, then keeps the sessions
open (idle) until it reads a line on stdin, so that run.py can measure the
server's memory with all of them open.

With ``burst``: COUNT connects at once, timed until the server answered on
every one (the greeting, or the echo of one byte), then closed.
"""

import json
import os
import resource
import select
import socket
import sys
import time

#: Sessions not yet answered at once (files: connecting or waiting for the greeting; echo: connecting),
#: below the server's listen backlog (4096): the kernel completes a handshake before the server accepts
#: it, so counting only connects in flight let up to 10,000 pile up in the accept queue, and each one
#: past the backlog had its SYN dropped and retried after 1 s (512 per run: a ready time of timers).
MAX_PENDING = 512


def raiseFileLimit(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, count + 100))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(mode: str, port: int, count: int) -> None:
    raiseFileLimit(count)
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    pending: dict[int, bytes] = {}
    started = time.perf_counter()
    opened = 0
    connecting: set[int] = set()
    waiting: set[int] = set()  # fds still expecting their greeting
    greeted = 0
    while greeted < count if mode == "files" else len(socks) - len(connecting) < count:
        while opened < count and len(connecting) + len(waiting) < MAX_PENDING:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fd = s.fileno()
            socks[fd] = s
            connecting.add(fd)
            ep.register(fd, select.EPOLLOUT)
            opened += 1
        for fd, ev in ep.poll(1.0):
            if fd in connecting:
                err = socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise SystemExit(f"connect failed: {os.strerror(err)}")
                connecting.discard(fd)
                if mode == "files":
                    ep.modify(fd, select.EPOLLIN)
                    waiting.add(fd)
                    pending[fd] = b""
                else:
                    ep.unregister(fd)
            elif ev & select.EPOLLIN:
                data = socks[fd].recv(4096)
                if not data:
                    raise SystemExit("server closed a session")
                pending[fd] += data
                if pending[fd].endswith(b"\r\n"):
                    if not pending[fd].startswith(b"#Server Ready."):
                        raise SystemExit(f"unexpected greeting {pending[fd]!r}")
                    waiting.discard(fd)
                    ep.unregister(fd)
                    greeted += 1
    result = {"sessions": len(socks), "connect_s": time.perf_counter() - started}
    if mode == "echo":
        started = time.perf_counter()
        answered = 0
        for fd, s in socks.items():
            ep.register(fd, select.EPOLLIN)
            s.send(b"x")
        while answered < count:
            for fd, ev in ep.poll(1.0):
                data = socks[fd].recv(16)
                if data != b"x":
                    raise SystemExit(f"bad echo {data!r}")
                ep.unregister(fd)
                answered += 1
        result["echo_all_s"] = time.perf_counter() - started
    print(json.dumps(result), flush=True)
    sys.stdin.readline()
    for s in socks.values():
        s.close()


def burst(mode: str, port: int, count: int) -> None:
    """
    COUNT connects issued at once; a connection is done when the server
    answered on it: the greeting (``files``), or the echo of one byte sent
    as soon as it connected (``echo``: an accepted connection with a protocol
    behind it, not just the kernel's handshake).  Prints the connections per
    second from the first connect to the last answer, then closes them all.
    """
    raiseFileLimit(count)
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    connecting: set[int] = set()
    got: dict[int, bytes] = {}
    started = time.perf_counter()
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks[s.fileno()] = s
        connecting.add(s.fileno())
        ep.register(s.fileno(), select.EPOLLOUT)
    done = 0
    while done < count:
        for fd, ev in ep.poll(5.0):
            s = socks[fd]
            if fd in connecting:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise SystemExit(f"connect failed: {os.strerror(err)}")
                connecting.discard(fd)
                ep.modify(fd, select.EPOLLIN)
                got[fd] = b""
                if mode == "echo":
                    s.send(b"x")
                continue
            data = s.recv(4096)
            if not data:
                raise SystemExit("server closed a connection")
            got[fd] += data
            if got[fd] == b"x" if mode == "echo" else got[fd].endswith(b"\r\n"):
                if mode == "files" and not got[fd].startswith(b"#Server Ready."):
                    raise SystemExit(f"unexpected greeting {got[fd]!r}")
                ep.unregister(fd)
                done += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"sessions": count, "burst_s": seconds, "conns_per_s": count / seconds}), flush=True)
    for s in socks.values():
        s.close()


if __name__ == "__main__":
    if sys.argv[4:] == ["burst"]:
        burst(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
