"""
Log floods against echofile (the outside attack's reproduction, docs/security.md "Logging").

Starts ``twistd -n echofile`` with its log on stdout (into a file, so that
twistd's 1 MB log rotation does not hide bytes), runs each flood for a few
seconds from loopback, and prints the log bytes and lines per second the
server wrote, and per session where there are sessions:

- ``one``: connect, AUTH, 25 x ``FILE nosuch``, QUIT in a loop from 127.0.0.1;
- ``many``: the same, each session from another 127.x.y.z source address;
- ``proxy``: the same through a ``haproxy:`` endpoint, each session's PROXY
  header naming another (forged) client, as a trusted balancer would;
- ``head``: ``HEAD /x<16 KB>`` to ``--metrics``, four connections at a time;
- ``echo1`` / ``echomany``: echo connect, one byte, close, from one or many sources.

Usage: ``python benchmarks/logflood.py [--seconds 5] [--only one,many,...]``.
Rates are wall-clock and move with the machine's load; bytes and lines per
session do not.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TWISTD = Path(sys.executable).with_name("twistd")
FILES, ECHO, METRICS, PROXIED = 18608, 18607, 18609, 18610
PASSWORD = "pw"
#: The refused file name each flood session asks for (--name-bytes makes it longer: up to --max-line).
NAME = b"nosuch"


def _source(i: int) -> str:
    return f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{(i & 255) or 1}"


def _session(sock: socket.socket) -> None:
    sock.sendall(f"AUTH {PASSWORD}\r\n".encode() + (b"FILE " + NAME + b"\r\n") * 25 + b"QUIT\r\n")
    sock.settimeout(2)
    while True:
        data = sock.recv(65536)
        if not data or b"#Bye." in data:
            break
    sock.close()


def files(seconds: float, many: bool = False, proxied: bool = False) -> None:
    end, i = time.time() + seconds, 0
    while time.time() < end:
        i += 1
        try:
            if proxied:
                sock = socket.create_connection(("127.0.0.1", PROXIED))
                forged = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
                sock.sendall(f"PROXY TCP4 {forged} 127.0.0.1 5000 {PROXIED}\r\n".encode())
            else:
                sock = socket.create_connection(("127.0.0.1", FILES), source_address=(_source(i) if many else "127.0.0.1", 0))
            _session(sock)
        except OSError:
            time.sleep(0.01)


def echo(seconds: float, many: bool = False) -> None:
    end, i = time.time() + seconds, 0
    while time.time() < end:
        i += 1
        try:
            sock = socket.create_connection(("127.0.0.1", ECHO), source_address=(_source(i) if many else "127.0.0.1", 0))
            sock.sendall(b"x")
            sock.recv(10)
            sock.close()
        except OSError:
            time.sleep(0.01)


def head(seconds: float) -> None:
    request = b"HEAD /x" + b"A" * 16000 + b" HTTP/1.0\r\nHost: x\r\n\r\n"

    def loop() -> None:
        end = time.time() + seconds
        while time.time() < end:
            try:
                sock = socket.create_connection(("127.0.0.1", METRICS))
                sock.sendall(request)
                while sock.recv(65536):
                    pass
                sock.close()
            except OSError:
                time.sleep(0.01)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


FLOODS = {
    "one": lambda s: files(s),
    "many": lambda s: files(s, many=True),
    "proxy": lambda s: files(s, proxied=True),
    "head": head,
    "echo1": lambda s: echo(s),
    "echomany": lambda s: echo(s, many=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", default=",".join(FLOODS))
    parser.add_argument("--name-bytes", type=int, default=0, help="refused names this long (default: 'nosuch')")
    args = parser.parse_args()
    global NAME
    if args.name_bytes:
        NAME = b"n" * args.name_bytes
    with tempfile.TemporaryDirectory() as work:
        root = Path(work, "root")
        root.mkdir()
        (root / "a.txt").write_text("hello\n")
        log = Path(work, "twistd.log")
        with log.open("wb") as out:
            server = subprocess.Popen(
                [str(TWISTD), "-n", "--logfile=-", "--pidfile=", "echofile", f"--root={root}",
                 f"--files=tcp:{FILES}:interface=127.0.0.1", f"--files=haproxy:tcp:{PROXIED}:interface=127.0.0.1",
                 f"--echo=tcp:{ECHO}:interface=127.0.0.1", f"--metrics=tcp:{METRICS}:interface=127.0.0.1",
                 "--max-per-ip=1000"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "ECHOFILE_PASSWORD": PASSWORD},
            )
        try:
            for _ in range(100):
                if b"StatusSite starting" in log.read_bytes():
                    break
                time.sleep(0.1)
            for name in args.only.split(","):
                start, began = log.stat().st_size, time.time()
                FLOODS[name](args.seconds)
                elapsed = time.time() - began
                time.sleep(0.5)
                with log.open("rb") as f:
                    f.seek(start)
                    data = f.read()
                lines = data.count(b"\n")
                sessions = len(re.findall(rb"\] files: \S+( \(via PROXY from \S+\))? closed \(", data))
                perSession = f"; {sessions} sessions, {len(data) / sessions:.0f} B and {lines / sessions:.2f} lines each" if sessions else ""
                print(f"{name:9s} {len(data) / elapsed / 1024:9.1f} KiB/s  {lines / elapsed:7.0f} lines/s{perSession}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
