"""
End-to-end helpers: the real ``twistd -n echofile`` as a subprocess.

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
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from echofile import wire
from echofile.text import sanitize
from support import PASSWORD, populate

#: Extra account configured on every server started here (``--auth memory:``).
ALICE = ("alice", "wonder land")
#: The contents of the file next to the root that must never be served.
SECRET = b"TOP SECRET: outside the root\n"
#: A sparse file in the root, for the clients that never read.
BIG_NAME = "big-200mb.bin"
BIG_SIZE = 200 * 1024 * 1024

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
IO_TIMEOUT = 5.0


def twistdPath() -> str:
    """The twistd of the environment running the tests (the one the package is installed in)."""
    candidate = Path(sys.executable).with_name("twistd")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("twistd")
    if found is None:
        pytest.fail("twistd not found next to the Python running the tests nor on PATH: install Twisted")
    return found


def requireTool(name: str) -> str:
    """The path of an external tool the tests drive; a clear failure (not a skip) when missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name!r} is not installed; the end-to-end tests need it "
            "(apt-get install -y telnet netcat-openbsd)"
        )
    return found


def serverEnvironment(password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ECHOFILE_PASSWORD", None)
    if password is not None:
        env["ECHOFILE_PASSWORD"] = password
    env["PYTHONUNBUFFERED"] = "1"  # the log goes to a file through stdout
    return env


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


def waitFor(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    """Poll C{predicate} until it is truthy; fail naming C{what} after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


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
class Server:
    """A running ``twistd -n echofile``."""

    proc: subprocess.Popen
    log: Path
    root: Path
    args: list[str]
    password: str | None
    echo_port: int = 0
    files_port: int = 0
    _logHandle: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ports(self) -> tuple[int, int]:
        return self.echo_port, self.files_port

    def logText(self) -> str:
        return self.log.read_text(errors="replace")

    def waitLog(self, pattern: str, timeout: float = IO_TIMEOUT, count: int = 1) -> list[re.Match]:
        """Wait until C{pattern} (a regex) matches at least C{count} times in the log."""
        regex = re.compile(pattern)

        def found() -> list[re.Match] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited ({self.proc.returncode}) while waiting for {pattern!r}:\n{self.logText()}")
            matches = list(regex.finditer(self.logText()))
            return matches if len(matches) >= count else None

        return waitFor(found, timeout, f"log line {pattern!r} (x{count})")  # type: ignore[return-value]

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
) -> Server:
    """
    Start the server on free loopback ports and wait until both services listen.

    @param extra: options of the echofile plugin (after ``echofile``).
    @param twistdOptions: options of twistd itself (before ``echofile``),
        e.g. ``--uid=nobody``.
    @param preexec_fn: run in the child before twistd starts (e.g. to lower
        a resource limit), as for L{subprocess.Popen}.
    """
    args = [
        twistdPath(), "-n", "--pidfile=", *twistdOptions, "echofile",
        "--echo", "tcp:0:interface=127.0.0.1",
        "--files", "tcp:0:interface=127.0.0.1",
        "--root", str(root),
        "--auth", f"memory:{ALICE[0]}:{ALICE[1]}",
        *extra,
    ]
    logDir.mkdir(parents=True, exist_ok=True)
    log = logDir / f"twistd-{time.monotonic_ns()}.log"
    handle = open(log, "wb")
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
        env=serverEnvironment(password), cwd=str(cwd or logDir), preexec_fn=preexec_fn,
    )
    server = Server(proc=proc, log=log, root=root, args=args, password=password, _logHandle=handle)
    try:
        server.echo_port = int(server.waitLog(r"EchoFactory starting on (\d+)", STARTUP_TIMEOUT)[0].group(1))
        server.files_port = int(server.waitLog(r"FilesFactory starting on (\d+)", STARTUP_TIMEOUT)[0].group(1))
    except BaseException:
        stop(server, check=False)
        raise
    return server


def stop(server: Server, check: bool = True) -> None:
    """SIGTERM, wait, and (when C{check}) insist on a clean exit and a clean log."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            if check:
                pytest.fail(f"server did not stop within {STOP_TIMEOUT}s of SIGTERM:\n{server.logText()}")
    server._logHandle.close()  # type: ignore[union-attr]
    if not check:
        return
    text = server.logText()
    # twistd re-raises the signal that stopped it once it has shut down cleanly.
    assert proc.returncode in (0, -signal.SIGTERM), f"server exited with {proc.returncode}:\n{text}"
    assert "Server Shut Down." in text, f"no clean shutdown in the log:\n{text}"
    for bad in ("Traceback", "Unhandled"):
        assert bad not in text, f"server log contains {bad!r}:\n{text}"


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
