"""
Client memory against a hostile server (issue #14): how far does
``echofile-client`` grow when a server floods it?

- ``list``: the server announces 10^12 entries (or 999,999, under the
  client's limit) and then sends entry lines as fast as the client takes them;
- ``chat``: the server floods chat events while the client's standard
  output is a pipe nobody reads (a terminal that is not taking output).

Each scenario runs the client as a subprocess against a fake server on
loopback for DURATION seconds (or until it passes CAP_MB) and prints its peak
resident set size.  Run: ``.venv/bin/python benchmarks/client_rss.py [seconds]``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
CAP_MB = 2048
CLIENT = [sys.executable, "-m", "echofile.client"]


def rssKB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def serve(sock: socket.socket, flood: bytes, trigger: bytes, header: bytes) -> None:
    """Greet, accept anything until C{trigger} is seen, then send C{flood} forever."""
    conn, _ = sock.accept()
    try:
        conn.sendall(b"#Server Ready.\r\n")
        seen = b""
        while trigger not in seen:
            data = conn.recv(4096)
            if not data:
                return
            seen += data
            if b"AUTH" in data:
                conn.sendall(b"#You are logged in.\r\n")
        conn.sendall(header)
        chunk = flood * (65536 // len(flood))
        while True:
            conn.sendall(chunk)
    except OSError:
        pass
    finally:
        conn.close()


def scenario(name: str, argv: list[str], flood: bytes, trigger: bytes, stdin: int | None, header: bytes = b"") -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=serve, args=(sock, flood, trigger, header), daemon=True)
    thread.start()
    env = {**os.environ, "ECHOFILE_PASSWORD": "x"}
    # stdout is a pipe we never read: a terminal that takes no output.
    process = subprocess.Popen(
        [*CLIENT, "--connect", f"tcp:host=127.0.0.1:port={port}", "--timeout", "600", *argv],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    start = time.monotonic()
    peak = 0
    try:
        while time.monotonic() - start < DURATION and process.poll() is None:
            peak = max(peak, rssKB(process.pid))
            if peak > CAP_MB * 1024:
                break
            time.sleep(0.1)
        outcome = "still running" if process.poll() is None else f"exited {process.returncode}"
    finally:
        process.kill()
        process.wait()
        sock.close()
    print(f"{name}: peak client RSS {peak / 1024:.0f} MB after {time.monotonic() - start:.1f} s ({outcome})")


if __name__ == "__main__":
    entry = b"1 " + b"a" * 200 + b".txt\r\n"
    scenario("LIST flood (10^12 entries announced)", ["list"], entry, b"LIST", subprocess.DEVNULL,
             b"#1000000000000 entries in /.\r\n")
    scenario("LIST flood (999,999 entries announced)", ["list"], entry, b"LIST", subprocess.DEVNULL,
             b"#999999 entries in /.\r\n")
    read, write = os.pipe()  # chat input that never ends and never types
    try:
        scenario("chat event flood, stdout not read", ["chat"], b"*mallory: " + b"spam " * 20 + b"\r\n", b"AUTH", read)
    finally:
        os.close(read)
        os.close(write)
