"""
Abuse resistance (issue 5) against the real ``twistd -n echofile``: login
penalties that outlive a connection, the login deadline, bcrypt htpasswd
accounts made by the real ``htpasswd`` tool, graceful shutdown on SIGTERM,
file-descriptor exhaustion under a low ``RLIMIT_NOFILE``, and running
unprivileged with ``twistd --uid/--gid``.

Every server here is its own subprocess; each test stops (or watches the exit
of) its servers and checks the exit status and that the log has no traceback.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from echofile import wire
from e2ehelpers import (
    BIG_NAME,
    BIG_SIZE,
    HELP,
    Conn,
    Server,
    cpuSeconds,
    fetch,
    makeTree,
    procIds,
    waitExit,
    waitFor,
)
from support import PASSWORD, populate

LOCKED = wire.error(wire.TOO_MANY_FAILURES).encode()
SHUTTING_DOWN = wire.SHUTTING_DOWN.encode()


@pytest.fixture
def serve(startServer: Callable[..., Server]) -> Callable[..., Server]:
    """The shared C{startServer} fixture (twistd options and preexec_fn pass through to launch)."""
    return startServer


def connectFrom(source: str, port: int, timeout: float = 5.0) -> Conn:
    """A client bound to C{source} (any 127/8 address is this machine)."""
    conn = Conn.__new__(Conn)
    conn.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.sock.settimeout(timeout)
    conn.sock.bind((source, 0))
    conn.sock.connect(("127.0.0.1", port))
    conn.buf = b""
    conn.reset = False
    return conn


def patterned(size: int) -> bytes:
    """Content where every offset is recognisable (a truncated copy is a prefix)."""
    block = b"".join(i.to_bytes(4, "big") for i in range(16384))
    return (block * (size // len(block) + 1))[:size]


# -- login penalties across connections ----------------------------------------------------


def failTwice(conn: Conn) -> None:
    """Two pipelined wrong passwords (answered one second apart)."""
    assert conn.line() == b"#Server Ready."
    conn.send(b"AUTH wrong-1\r\nAUTH wrong-2\r\n")


def test_lockout_across_connections(serve) -> None:
    """
    --lockout-failures 4: two connections fail twice each (never reaching the
    per-connection limit of 3); then every AUTH from 127.0.0.1, even with the
    right password and on a new connection, is refused and closed.  Another
    address is not affected.
    """
    server = serve("--lockout-failures", "4")
    with server.files() as a, server.files() as b:
        failTwice(a)
        failTwice(b)  # concurrently: the delay is per connection
        for conn in (a, b):
            assert conn.lines(2) == [b"!Bad password.", b"!Bad password."]
        server.waitLog(r"127\.0\.0\.1 locked out of AUTH for 600\.0s after 4 failures")
        with server.files() as fresh:
            assert fresh.line() == b"#Server Ready."
            assert fresh.command("HELP") == HELP  # not refused: only AUTH is
            fresh.send(f"AUTH {PASSWORD}\r\nHELP\r\n".encode())
            assert fresh.rest() == LOCKED + b"\r\n"  # the pipelined HELP never ran
        # Connections that were already open are refused as well (2 failures so far on each),
        # whatever the account.
        a.send(f"AUTH {PASSWORD}\r\n".encode())
        b.send(b"USER alice\r\nAUTH wonder land\r\n")
        assert a.rest() == LOCKED + b"\r\n"
        assert b.line() == b"#User alice accepted, send AUTH."
        assert b.rest() == LOCKED + b"\r\n"
    # The lock-out is per address: 127.0.0.2 still logs in.
    with connectFrom("127.0.0.2", server.files_port) as other:
        other.login()
    log = server.logText()
    assert len(re.findall(r"AUTH from locked-out 127\.0\.0\.1:\d+ refused", log)) == 3
    assert "logged in as guest" in log and "127.0.0.2" in log
    assert PASSWORD not in log and "wrong-1" not in log


def test_lockout_exempt_address(serve) -> None:
    """The same failures from an address in --lockout-exempt lock nothing out."""
    server = serve("--lockout-failures", "4", "--lockout-exempt", "127.0.0.1")
    with server.files() as a, server.files() as b:
        failTwice(a)
        failTwice(b)
        for conn in (a, b):
            assert conn.lines(2) == [b"!Bad password.", b"!Bad password."]
        with server.files() as fresh:
            fresh.login()
        assert a.command(f"AUTH {PASSWORD}") == b"#You are logged in."
    assert "locked out" not in server.logText()


# -- login deadline ------------------------------------------------------------------------


def test_login_deadline(serve) -> None:
    """
    --login-timeout 1: a session that does not log in gets ``!Login timeout.``
    and is closed, even while it keeps sending commands (this is not the idle
    timeout); a session that logged in stays.
    """
    server = serve("--login-timeout", "1")
    with server.files() as logged, server.files() as chatty, server.files() as silent:
        logged.login()  # connected first: its deadline passes before the others'
        assert chatty.line() == b"#Server Ready."
        assert silent.line() == b"#Server Ready."
        started = time.monotonic()
        lines: list[bytes] = []
        while not lines or lines[-1] == HELP:  # commands do not postpone the login deadline
            assert time.monotonic() - started < 3.0, lines
            try:
                chatty.send(b"HELP\r\n")
            except OSError:  # closed meanwhile: its last line is already on its way
                pass
            lines.append(chatty.line())
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        assert lines[-1] == b"!Login timeout." and len(lines) > 3, lines
        assert 0.5 < elapsed < 3.0, elapsed
        assert chatty.rest() == b""
        assert silent.rest() == b"!Login timeout.\r\n"
        assert logged.command("HELP") == HELP
        assert fetch(logged, "notes.txt") == b"hello notes\n"
    server.waitLog(r"files: 127\.0\.0\.1:\d+ closed \(login timeout\)", count=2)


# -- bcrypt htpasswd -----------------------------------------------------------------------


def test_htpasswd_accounts(serve, tmp_path: Path) -> None:
    """--auth htpasswd:FILE with a file made by ``htpasswd -B``: the right password logs in, a wrong one fails."""
    tool = shutil.which("htpasswd")
    if tool is None:
        pytest.fail("htpasswd is not installed: apt-get install -y apache2-utils")
    passwords = tmp_path / "echofile.htpasswd"
    subprocess.run([tool, "-c", "-b", "-B", "-C", "5", str(passwords), "bob", "build it"], check=True, capture_output=True)
    subprocess.run([tool, "-b", "-m", str(passwords), "md5user", "cheap"], check=True, capture_output=True)
    assert passwords.read_text().startswith("bob:$2y$05$")
    server = serve("--auth", f"htpasswd:{passwords}")
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        assert c.command("USER bob") == b"#User bob accepted, send AUTH."
        assert c.command("AUTH build") == b"!Bad password."
        assert c.command("AUTH build it") == b"#You are logged in."
        assert fetch(c, "notes.txt") == b"hello notes\n"
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        assert c.command("USER md5user") == b"#User md5user accepted, send AUTH."
        assert c.command("AUTH cheap") == b"!Bad password."  # MD5 hashes are not accepted
        assert c.command("USER nobody-here") == b"#User nobody-here accepted, send AUTH."
        assert c.command("AUTH build it") == b"!Bad password."
    server.waitLog(r"logged in as bob")
    server.waitLog(r"ignoring 1 accounts without a bcrypt hash")
    assert "build it" not in server.logText()


# -- graceful shutdown -------------------------------------------------------------------------


def assertRefused(port: int) -> None:
    """The port takes no new connection (a connect that slips in before the close is never greeted)."""

    def refused() -> bool:
        try:
            probe = Conn(port, timeout=0.5)
        except (ConnectionRefusedError, ConnectionResetError):
            # Reset: the connect slipped in as the listener closed (a loaded machine), never served.
            return True
        with probe:
            try:
                assert probe.rest() == b"", "a connection made after SIGTERM was served"
            except TimeoutError:
                pass
        return False

    waitFor(refused, 1.0, f"port {port} to refuse connections")


def test_shutdown_finishes_transfers_and_tells_idle_sessions(serve, tmp_path: Path) -> None:
    """
    SIGTERM with a transfer in flight to a slow reader: the idle session is
    told at once, both ports stop listening, the body is finished with its
    trailer, then ``!Server shutting down.``; the process then exits cleanly.
    """
    root = makeTree(tmp_path / "shutdown")
    content = patterned(8 * 1024 * 1024)
    (root / "large.bin").write_bytes(content)
    server = serve(root=root)
    reader = server.files(rcvbuf=16 * 1024)
    idle = server.files()
    anonymous = server.files()
    try:
        reader.login()
        idle.login()
        assert anonymous.line() == b"#Server Ready."
        assert reader.command("FILE large.bin") == f"#Sending large.bin ({len(content)} bytes).".encode()
        received = reader.exact(64 * 1024)
        server.proc.send_signal(signal.SIGTERM)
        server.waitLog(r"Shutting down: draining 3 sessions")
        assert idle.rest() == SHUTTING_DOWN + b"\r\n"
        assert anonymous.rest() == SHUTTING_DOWN + b"\r\n"
        assertRefused(server.files_port)
        assertRefused(server.echo_port)
        time.sleep(0.5)  # a slow reader: the drain waits for it
        assert server.proc.poll() is None, "the server exited while a transfer was in flight"
        received += reader.exact(len(content) - len(received))
        assert received == content
        assert reader.exact(2) == b"\r\n"
        assert reader.line() == b"#File large.bin sent successfully."
        assert reader.rest() == SHUTTING_DOWN + b"\r\n"
    finally:
        for conn in (reader, idle, anonymous):
            conn.close()
    waitExit(server, 5)
    assertCleanExit(server)
    assert "All sessions closed" in server.logText()
    assert "Aborting" not in server.logText()


def assertCleanExit(server: Server) -> None:
    """twistd re-raises the signal that stopped it once it has shut down cleanly."""
    log = server.logText()
    assert server.proc.returncode in (0, -signal.SIGTERM), f"exit status {server.proc.returncode}:\n{log}"
    assert "Server Shut Down." in log
    assert "Traceback" not in log and "Unhandled" not in log, log


def stalledTransfer(server: Server) -> Conn:
    """A logged-in client that asked for the 200 MB file, read its header and then stopped reading."""
    c = server.files(rcvbuf=16 * 1024)
    c.login()
    assert c.command(f"FILE {BIG_NAME}") == f"#Sending {BIG_NAME} ({BIG_SIZE} bytes).".encode()
    return c


def test_shutdown_aborts_a_stalled_transfer_after_the_drain_timeout(serve) -> None:
    """--drain-timeout 1 and a reader that stopped: cut without the success trailer, then exit."""
    server = serve("--drain-timeout", "1")
    c = stalledTransfer(server)
    try:
        server.proc.send_signal(signal.SIGTERM)
        took = waitExit(server, 8)
        rest = c.rest()
    finally:
        c.close()
    assert 0.9 < took < 6, took
    assertCleanExit(server)
    assert len(rest) < BIG_SIZE
    assert b"sent successfully" not in rest and b"shutting down" not in rest
    assert rest.strip(b"\0") == b"", "nothing but the (zero) body may arrive"
    log = server.logText()
    assert "Aborting 1 sessions: drain timeout" in log
    print(f"\nstalled reader got {len(rest)} more body bytes of {BIG_SIZE}; server exited {took:.2f}s after SIGTERM")


def test_second_signal_exits_promptly(serve) -> None:
    """--drain-timeout 30 and a stalled transfer: a second SIGTERM during the drain exits at once."""
    server = serve("--drain-timeout", "30")
    c = stalledTransfer(server)
    try:
        server.proc.send_signal(signal.SIGTERM)
        server.waitLog(r"Shutting down: draining 1 sessions \(at most 30\.0s\)")
        assert server.proc.poll() is None
        server.proc.send_signal(signal.SIGTERM)
        took = waitExit(server, 10)
        rest = c.rest()
    finally:
        c.close()
    assert took < 5, f"exited {took:.1f}s after the second SIGTERM"
    assertCleanExit(server)
    assert b"sent successfully" not in rest
    assert "Aborting 1 sessions: second signal" in server.logText()


# -- file-descriptor exhaustion ----------------------------------------------------------------

FD_LIMIT = 40
CLIENTS = 70


def lowFdLimit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def fates(clients: list[Conn], timeout: float) -> dict[Conn, bytes]:
    """
    Wait until every client got its greeting or was closed: each client's
    first line (``b""`` for a close without one).
    """
    result: dict[Conn, bytes] = {}
    deadline = time.monotonic() + timeout
    pending = {c.sock: c for c in clients}
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{len(pending)} clients neither greeted nor closed after {timeout}s")
        readable, _, _ = select.select(list(pending), [], [], left)
        for sock in readable:
            c = pending[sock]
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            c.buf += chunk
            if not chunk or b"\r\n" in c.buf:
                del pending[sock]
                line, _, c.buf = c.buf.partition(b"\r\n")
                result[c] = line
    return result


def test_fd_exhaustion(serve) -> None:
    """
    RLIMIT_NOFILE 40, caps far above it, 70 clients: those that fit are
    served, the rest are closed without a word, the server neither crashes
    nor spins, and once the clients leave a new one is served normally.
    """
    server = serve("--max-connections", "1000", "--max-per-ip", "1000", preexec_fn=lowFdLimit)
    limits = Path(f"/proc/{server.pid}/limits").read_text()
    assert re.search(rf"Max open files\s+{FD_LIMIT}\s+{FD_LIMIT}", limits), limits
    clients: list[Conn] = []
    try:
        for _ in range(CLIENTS):
            clients.append(server.files())
        first = fates(clients, 10)
        served = [c for c in clients if first[c] == b"#Server Ready."]
        refused = [c for c in clients if first[c] == b""]
        assert len(served) + len(refused) == CLIENTS, {first[c] for c in clients}
        assert 10 < len(served) < FD_LIMIT and refused, (len(served), len(refused))
        for c in refused:
            assert c.rest() == b""
        server.waitLog(r"EMFILE recovery: Closed socket from")

        # Holding the connections: the server must sit idle, not spin on a readable listener.
        before = cpuSeconds(server.pid)
        probe = time.monotonic()
        time.sleep(2.0)
        burned = cpuSeconds(server.pid) - before
        held = time.monotonic() - probe
        print(f"\nfd exhaustion: {len(served)} served, {len(refused)} closed; "
              f"server used {burned:.2f} CPU-s in {held:.1f}s while at the limit")
        assert burned < 0.5, f"the server burned {burned:.2f} CPU-s in {held:.1f}s at the fd limit (spinning)"

        # One more client at the limit is closed as well, and those in are still served.
        with server.files() as extra:
            assert extra.rest() == b""
        c = served[0]
        assert c.command(f"AUTH {PASSWORD}") == b"#You are logged in."
        assert c.command("HELP") == HELP
        # FILE needs a descriptor: at the limit it gets the usual error (or the file), never a crash.
        header = c.command("FILE notes.txt")
        if header.startswith(b"#Sending"):
            assert c.exact(len(b"hello notes\n") + 2) == b"hello notes\n\r\n"
            assert c.line() == b"#File notes.txt sent successfully."
        else:
            assert header == b"!File notes.txt could not be opened.", header
        assert c.command("HELP") == HELP
        print(f"FILE at the fd limit: {header.decode()}")
    finally:
        for c in clients:
            c.close()

    def servedAgain() -> bool:
        with server.files(timeout=2) as c:
            try:
                return c.line() == b"#Server Ready."
            except EOFError:
                return False

    waitFor(servedAgain, 5, "a new client to be served once the others left")
    # Served once means one descriptor was free; wait until the server has let go of the others too.
    waitFor(lambda: len(os.listdir(f"/proc/{server.pid}/fd")) < FD_LIMIT // 2, 10,
            "the server to close the sessions the clients left")
    with server.files() as c:
        c.login()
        assert fetch(c, "notes.txt") == b"hello notes\n"
        assert c.command("LIST docs") == b"#1 entries in docs."
        assert c.line() == b"9 readme.txt"
    assert server.proc.poll() is None
    assert "Traceback" not in server.logText()


# -- running unprivileged ----------------------------------------------------------------------


@pytest.fixture
def worldReadableRoot() -> Iterator[Path]:
    """A served root outside pytest's 0700 temp folders, so that user nobody can reach it."""
    base = Path(tempfile.mkdtemp(prefix="echofile-unprivileged-"))
    try:
        base.chmod(0o755)
        root = base / "root"
        root.mkdir(mode=0o755)
        populate(root)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        locked = root / "locked.txt"
        locked.write_bytes(b"only root may read this\n")
        locked.chmod(0o000)
        yield root
    finally:
        shutil.rmtree(base)


def test_runs_unprivileged(serve, worldReadableRoot: Path) -> None:
    """
    Started as root with ``twistd --uid=nobody --gid=nogroup``: it binds,
    drops to nobody, serves readable files and refuses a mode-000 one.
    """
    if os.geteuid() != 0:
        pytest.fail("this test starts twistd as root and checks that it drops to 'nobody': run it as root")
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
        nogroup = grp.getgrnam("nogroup").gr_gid
    except KeyError as e:
        pytest.fail(f"the user 'nobody' and group 'nogroup' must exist: {e}")
    server = serve(root=worldReadableRoot, twistdOptions=("--uid=nobody", "--gid=nogroup"))
    # twistd binds (the "starting on" lines) before it drops privileges and starts the reactor.
    server.waitLog(rf"set uid/gid {nobody}/{nogroup}")
    ids = procIds(server.pid)
    assert ids["Uid"] == [nobody] * 4, ids
    assert ids["Gid"] == [nogroup] * 4, ids
    assert 0 not in ids["Groups"], ids  # root's supplementary groups are gone too
    with server.files() as c:
        c.login()
        assert fetch(c, "notes.txt") == b"hello notes\n"
        assert fetch(c, "docs/readme.txt") == b"read me\r\n"
        assert c.command("FILE locked.txt") == b"!File locked.txt could not be opened."
        assert c.command("HELP") == HELP
    with server.echo() as e:
        e.send(b"ping")
        assert e.exact(4) == b"ping"
