"""
End-to-end helpers: the real ``twistd -n echofile`` as a subprocess
(started and stopped by L{twistdhelpers}, the one launcher of the tests).

The server listens on ``tcp:0:interface=127.0.0.1`` for both services; the
ports it got are read from its log (``EchoFactory starting on N``,
``FilesFactory starting on N``).  Teardown stops it with SIGTERM and checks
that it exited cleanly and never logged a traceback or an unhandled error.

Clients here are plain blocking sockets with timeouts: every wait is for an
event (a line, EOF, a log line), bounded so that a hang fails instead of
blocking the run.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pytest

from echofile import wire
from echofile.text import sanitize
from support import PASSWORD, populate
from twistdhelpers import (  # noqa: F401 (re-exported: the e2e tests import them from here)
    IO_TIMEOUT, STARTUP_TIMEOUT, STOP_TIMEOUT, Running, serverEnvironment, start, stop, twistdCommand, twistdPath,
    waitFor,
)

#: Extra account configured on every server started here (``--auth memory:``).
ALICE = ("alice", "wonder land")
#: The contents of the file next to the root that must never be served.
SECRET = b"TOP SECRET: outside the root\n"
#: A sparse file in the root, for the clients that never read.
BIG_NAME = "big-200mb.bin"
BIG_SIZE = 200 * 1024 * 1024



def requireTool(name: str) -> str:
    """The path of an external tool the tests drive; a clear failure (not a skip) when missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name!r} is not installed; the end-to-end tests need it "
            "(apt-get install -y telnet netcat-openbsd)"
        )
    return found


def makeTree(base: Path) -> Path:
    """
    The served root, with the traps hostile tests aim at, and a sibling
    ``<root>-other`` folder holding a secret.
    """
    root = base / "root"
    other = base / "root-other"
    root.mkdir(parents=True)
    other.mkdir()
    (other / "secret").write_bytes(SECRET)
    populate(root)
    (root / "link-in").symlink_to("notes.txt")
    (root / "link-in-dir").symlink_to("docs")
    (root / "link-out").symlink_to("../root-other/secret")
    (root / "link-out-abs").symlink_to(other / "secret")
    (root / "link-out-dir").symlink_to(other)
    (root / "link-etc").symlink_to("/etc/passwd")
    (root / "dangling").symlink_to("does-not-exist")
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "fifo")
    with open(root / BIG_NAME, "wb") as f:  # sparse: no disk, and reads are cheap
        f.truncate(BIG_SIZE)
    return root


def procStatus(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def openFds(pid: int) -> dict[str, str]:
    """The process's open descriptors: number -> what it points to."""
    result = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            result[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            pass
    return result


class Conn:
    """A blocking TCP client with a read buffer and timeouts on every read."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.reset = False  # did the connection end with a RST?

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.reset = True
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self) -> bytes:
        """One reply line, without its CRLF."""
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before a complete line; got {self.buf[:200]!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def lines(self, n: int) -> list[bytes]:
        return [self.line() for _ in range(n)]

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed after {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def rest(self) -> bytes:
        """Everything until the server closes (EOF or RST)."""
        while self._fill():
            pass
        data, self.buf = self.buf, b""
        return data

    def command(self, line: bytes | str) -> bytes:
        """Send one command line (CRLF), return the one-line reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.line()

    def login(self, password: str = PASSWORD) -> None:
        assert self.line() == b"#Server Ready."
        assert self.command(f"AUTH {password}") == b"#You are logged in."

    def abort(self) -> None:
        """Close with a RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Server(Running):
    """A running ``twistd -n echofile`` (L{twistdhelpers.start}), with blocking clients and /proc figures."""

    def files(self, **kwargs: object) -> Conn:
        return Conn(self.files_port, **kwargs)  # type: ignore[arg-type]

    def echo(self, **kwargs: object) -> Conn:
        return Conn(self.echo_port, **kwargs)  # type: ignore[arg-type]

    def rssKB(self) -> int:
        return procStatus(self.pid, "VmRSS")

    def fds(self) -> dict[str, str]:
        return openFds(self.pid)

    def socketCount(self) -> int:
        return sum(1 for target in self.fds().values() if target.startswith("socket:"))


def launch(
    root: Path,
    logDir: Path,
    *extra: str,
    password: str | None = PASSWORD,
    cwd: Path | None = None,
    twistdOptions: tuple[str, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
    auth: str = f"memory:{ALICE[0]}:{ALICE[1]}",
    env: Mapping[str, str] | None = None,
) -> Server:
    """
    Start the server on free loopback ports and wait until both services listen.

    @param extra: options of the echofile plugin (after ``echofile``).
    @param twistdOptions: options of twistd itself (before ``echofile``),
        e.g. ``--uid=nobody``.
    @param preexec_fn: run in the child before twistd starts (e.g. to lower
        a resource limit), as for L{subprocess.Popen}.
    @param auth: the extra account (C{--auth}).
    @param env: more environment variables for the server.
    """
    args = twistdCommand(
        "--echo", "tcp:0:interface=127.0.0.1",
        "--files", "tcp:0:interface=127.0.0.1",
        "--root", str(root),
        "--auth", auth,
        *extra,
        twistdOptions=twistdOptions,
    )
    return start(args, logDir, root, kind=Server, password=password, env=env, cwd=cwd, preexec_fn=preexec_fn)


def cpuSeconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (/proc/PID/stat), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is the state
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def procIds(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid (real, effective, saved, fs) and Groups lines of /proc/PID/status."""
    result = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            result[key] = [int(v) for v in value.split()]
    return result


def waitExit(server: Server, timeout: float) -> float:
    """Wait for the server to exit on its own; the seconds it took.  Fails (and kills it) after C{timeout}."""
    started = time.monotonic()
    try:
        server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        pytest.fail(f"server did not exit within {timeout}s:\n{server.logText()}")
    return time.monotonic() - started


HELP = wire.HELP.encode()


def nc(port: int, data: bytes, *options: str, timeout: float = 15) -> subprocess.CompletedProcess:
    """Run netcat-openbsd against 127.0.0.1:C{port} with C{data} on its stdin."""
    return subprocess.run(
        [requireTool("nc"), *options, "127.0.0.1", str(port)],
        input=data, capture_output=True, timeout=timeout,
    )


def fetch(conn: "Conn", name: str) -> bytes:
    """
    FILE <name> on a logged-in connection; the body, after checking the header
    and the trailer (both name the file as the server shows it: sanitised).
    """
    shown = sanitize(name).encode()
    header = conn.command(b"FILE " + name.encode())
    match = re.fullmatch(rb"#Sending (.*) \((\d+) bytes\)\.", header)
    assert match, header
    assert match.group(1) == shown
    body = conn.exact(int(match.group(2)))
    assert conn.exact(2) == b"\r\n"
    assert conn.line() == b"#File " + shown + b" sent successfully."
    return body


def freeUdpPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
