"""
LIST of a huge folder: does it stall other sessions, and what do clients
that never read cost?

    python benchmarks/listing.py                   # 200,000 entries, 20 non-reading clients
    python benchmarks/listing.py --entries 50000 --clients 5

Starts ``twistd -n echofile`` (the one next to this Python) on loopback with
``--root`` a folder of N empty files (made once, kept in the temporary
folder for later runs), then measures:

1. B{stall}: one client sends one byte to the echo service of the same
   server and waits for it, again and again, while another client runs
   ``LIST`` and reads it all; the worst echo round trip during the LIST is
   how long the reactor was kept from other sessions.  The folder's
   modification time is moved before each run so that the server reads it
   again; a last run lists it again at once (a shared listing, if any).
2. B{memory}: C{--clients} sessions each send ``LIST`` and never read; once
   the socket queues stop moving, the server's VmRSS (and peak VmHWM) from
   /proc, against its VmRSS before.

Linux only (/proc). Not part of the test suite: the figures depend on the
machine; docs/security.md (*Listings*) quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

PASSWORD = "bench pass"
MiB = 1024 * 1024


def makeFolder(entries: int) -> Path:
    """A root holding C{big/} with C{entries} empty files (reused between runs)."""
    root = Path(tempfile.gettempdir()) / f"echofile-bench-list-{entries}"
    big = root / "big"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    big.mkdir(parents=True)
    for i in range(entries):
        os.close(os.open(big / f"entry-{i:07d}.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    (root / ".complete").touch()
    return root


def startServer(root: Path, logDir: Path) -> tuple[subprocess.Popen, int, int, Path]:
    twistd = Path(sys.executable).with_name("twistd")
    log = logDir / "twistd.log"
    env = dict(os.environ, ECHOFILE_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "echofile", "--root", str(root),
         "--echo", "tcp:0:interface=127.0.0.1", "--files", "tcp:0:interface=127.0.0.1",
         "--max-per-ip", "1000"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=logDir,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        echo = re.search(r"EchoFactory starting on (\d+)", text)
        files = re.search(r"FilesFactory starting on (\d+)", text)
        if echo and files:
            return proc, int(echo.group(1)), int(files.group(1)), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text(errors='replace')}")


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def filesClient(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(120)
    sock.connect(("127.0.0.1", port))
    reader = sock.makefile("rb")
    assert reader.readline() == b"#Server Ready.\r\n"
    sock.sendall(f"AUTH {PASSWORD}\r\n".encode())
    assert reader.readline() == b"#You are logged in.\r\n"
    return sock


def readListing(sock: socket.socket) -> int:
    """Send LIST big and read the whole reply; the number of entries."""
    sock.sendall(b"LIST big\r\n")
    buf = b""
    while b"\r\n" not in buf:
        buf += sock.recv(1 << 16)
    header, buf = buf.split(b"\r\n", 1)
    count = int(re.fullmatch(rb"#(\d+) entries in big\.", header).group(1))
    while buf.count(b"\r\n") < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("listing cut short")
        buf += chunk
    return count


def measureStall(echoPort: int, filesPort: int) -> tuple[float, float, float, int]:
    """(worst echo round trip during the LIST, median round trip, LIST duration, entries), in seconds."""
    done = threading.Event()
    rtts: list[float] = []
    echo = socket.create_connection(("127.0.0.1", echoPort))
    echo.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ping() -> None:
        while not done.is_set():
            started = time.perf_counter()
            echo.sendall(b"x")
            assert echo.recv(1) == b"x"
            rtts.append(time.perf_counter() - started)
            time.sleep(0.001)

    lister = filesClient(filesPort)
    thread = threading.Thread(target=ping)
    thread.start()
    time.sleep(0.3)
    rtts.clear()
    started = time.perf_counter()
    entries = readListing(lister)
    duration = time.perf_counter() - started
    done.set()
    thread.join()
    echo.close()
    lister.close()
    ordered = sorted(rtts)
    return max(rtts), ordered[len(ordered) // 2], duration, entries


def tcpSendQueue(port: int) -> int:
    """Bytes in the send queues of the server's sockets on C{port} (/proc/net/tcp)."""
    total = 0
    local = f":{port:04X}"
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[1].endswith(local) and fields[3] == "01":  # ESTABLISHED
            total += int(fields[4].split(":")[0], 16)
    return total


def measureMemory(pid: int, filesPort: int, clients: int) -> tuple[int, int, int, int]:
    """(VmRSS before, VmRSS after, VmHWM after, bytes in the server's send queues), kB and bytes."""
    socks = [filesClient(filesPort, rcvbuf=16 * 1024) for _ in range(clients)]
    time.sleep(0.5)
    before = status(pid, "VmRSS")
    for sock in socks:
        sock.sendall(b"LIST big\r\n")
    # Wait until nothing moves for 2 s (the server has written what it will write).
    last, since = (-1, -1), time.monotonic()
    while time.monotonic() - since < 2.0:
        time.sleep(0.1)
        now = (status(pid, "VmRSS"), tcpSendQueue(filesPort))
        if now != last:
            last, since = now, time.monotonic()
    after, hwm, queued = status(pid, "VmRSS"), status(pid, "VmHWM"), tcpSendQueue(filesPort)
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    return before, after, hwm, queued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--stall-runs", type=int, default=3)
    args = parser.parse_args()

    root = makeFolder(args.entries)
    print(f"folder: {args.entries} entries in {root / 'big'}")
    with tempfile.TemporaryDirectory() as logDir:
        with running(root, Path(logDir) / "stall") as (proc, echoPort, filesPort):
            big = root / "big"
            for run in range(args.stall_runs):
                # A new modification time: the server must read the folder again (no shared copy).
                info = big.stat()
                os.utime(big, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
                worst, median, duration, entries = measureStall(echoPort, filesPort)
                print(f"stall run {run + 1}: LIST of {entries} entries (folder read) took {duration:.2f} s; "
                      f"echo round trip during it: worst {worst * 1000:.1f} ms, median {median * 1000:.2f} ms")
            worst, median, duration, entries = measureStall(echoPort, filesPort)
            print(f"stall, listing shared (read again within the cache age, if the server keeps one): "
                  f"{duration:.2f} s; echo round trip worst {worst * 1000:.1f} ms, median {median * 1000:.2f} ms")
        # Memory on a fresh server, so that the runs above do not count.
        with running(root, Path(logDir) / "memory") as (proc, echoPort, filesPort):
            before, after, hwm, queued = measureMemory(proc.pid, filesPort, args.clients)
            print(f"memory: {args.clients} clients that never read: VmRSS {before / 1024:.0f} MB -> "
                  f"{after / 1024:.0f} MB (peak VmHWM {hwm / 1024:.0f} MB); "
                  f"{queued / MiB:.1f} MB in the server's socket send queues")


@contextlib.contextmanager
def running(root: Path, logDir: Path) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """A server for the block's duration, stopped with SIGTERM (killed if it hangs)."""
    logDir.mkdir(parents=True)
    proc, echoPort, filesPort, _ = startServer(root, logDir)
    try:
        yield proc, echoPort, filesPort
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

if __name__ == "__main__":
    main()
