"""
Connections and addresses against the real ``twistd -n echofile`` (issue 10):

- connections that never finish their TLS handshake or never send their
  PROXY header count against --max-per-ip from the moment they are
  accepted, so one address cannot take every descriptor (under a low
  RLIMIT_NOFILE, as in the report: legitimate clients were reset);
- an IPv4 client on a dual-stack ``tcp6:`` listener is 127.0.0.1, not
  ``::ffff:127.0.0.1``, for --lockout-exempt, --trusted-proxy and the logs;
- on a ``unix:`` socket each local user is its own key (``uid:N``).
"""

from __future__ import annotations

import os
import re
import resource
import select
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployhelpers import Certificate, makeCertificate, startServer as startPlainServer
from e2ehelpers import PASSWORD, Conn, stop, waitFor
from support import populate

PENDING = 300
MAX_PER_IP = 20
#: Low enough that PENDING connections held by one address would exhaust it (as in the report).
FD_LIMIT = 150


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return makeCertificate(tmp_path_factory.mktemp("tls"))


def lowFdLimit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def connectFrom(source: str, port: int, family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def closedByServer(socks: list[socket.socket]) -> set[socket.socket]:
    """Those of C{socks} the server has closed (EOF or RST waiting), without ever having sent a byte."""
    readable, _, _ = select.select(socks, [], [], 0.2)
    closed = set()
    for sock in readable:
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except ConnectionResetError:
            data = b""
        assert data == b"", f"a refused connection was sent {data!r}"
        closed.add(sock)
    return closed


def asConn(sock: socket.socket) -> Conn:
    conn = Conn.__new__(Conn)
    conn.sock, conn.buf, conn.reset = sock, b"", False
    return conn


def tlsClient(sock: socket.socket, certificate: Certificate) -> socket.socket:
    context = ssl.create_default_context(cafile=str(certificate.cert))
    return context.wrap_socket(sock, server_hostname="localhost")


def legitimateClient(kind: str, source: str, port: int, certificate: Certificate) -> Conn:
    """A client that does what it should: completes the handshake / sends a (trusted) header."""
    sock = connectFrom(source, port)
    if kind == "tls":
        sock = tlsClient(sock, certificate)
    else:
        sock.sendall(b"PROXY TCP4 192.0.2.9 127.0.0.1 5000 8008\r\n")
    return asConn(sock)


@pytest.mark.parametrize("kind", ["tls", "proxy"])
def test_connections_that_never_get_ready_are_capped(startServer, certificate: Certificate, kind: str) -> None:
    """
    PENDING connections from 127.0.0.1 that never start TLS / never send a
    PROXY header: the server keeps MAX_PER_IP of them and closes the rest
    at once without a word; a client from another address is served
    meanwhile, and 127.0.0.1 is served again once they are gone.
    """
    if kind == "tls":
        endpoint = f"ssl:0:interface=127.0.0.1:privateKey={certificate.key}:certKey={certificate.cert}"
        ready = r"FilesFactory \(TLS\) starting on (\d+)"
    else:
        endpoint = "haproxy:tcp:0:interface=127.0.0.1"
        ready = r"FilesFactory \(PROXY\) starting on (\d+)"
    server = startServer("--files", endpoint, "--max-per-ip", str(MAX_PER_IP), preexec_fn=lowFdLimit)
    port = int(server.waitLog(ready)[0].group(1))
    baseline = server.socketCount()
    pending: list[socket.socket] = []
    resetAtConnect = 0  # refused so fast that the close overtook connect() itself
    try:
        for _ in range(PENDING):
            try:
                pending.append(connectFrom("127.0.0.1", port))
            except ConnectionResetError:
                resetAtConnect += 1
        closed: set[socket.socket] = set()

        def allRefusedClosed() -> bool:
            closed.update(closedByServer([s for s in pending if s not in closed]))
            return len(closed) + resetAtConnect >= PENDING - MAX_PER_IP

        waitFor(allRefusedClosed, 20, f"{PENDING - MAX_PER_IP} connections over --max-per-ip to be closed")
        waitFor(lambda: server.socketCount() - baseline <= MAX_PER_IP, 10, "the server to let go of the refused ones")
        held = server.socketCount() - baseline
        print(f"\n{kind}: {PENDING} connections from 127.0.0.1 never ready: the server holds {held} "
              f"(--max-per-ip {MAX_PER_IP}), closed {len(closed) + resetAtConnect}")
        assert held == MAX_PER_IP and len(closed) + resetAtConnect == PENDING - MAX_PER_IP
        server.waitLog(r"files: refused 127\.0\.0\.1:\d+: 20 connections from its address open \(--max-per-ip\)")

        # Another address gets in while they wait.
        with legitimateClient(kind, "127.0.0.2", port, certificate) as conn:
            conn.login()
        # 127.0.0.1 itself is at its cap: closed without a word (on a loaded
        # machine the close can even overtake connect() itself, as a reset).
        try:
            extraSock = connectFrom("127.0.0.1", port)
        except ConnectionResetError:
            pass
        else:
            with asConn(extraSock) as extra:
                assert extra.rest() == b""
    finally:
        for sock in pending:
            sock.close()
    waitFor(lambda: server.socketCount() <= baseline, 10, "the pending connections to be gone")
    with legitimateClient(kind, "127.0.0.1", port, certificate) as conn:
        conn.login()
        assert conn.command("QUIT") == b"#Bye."
    if kind == "proxy":
        server.waitLog(r"files: connection from 192\.0\.2\.9:5000 \(via PROXY from 127\.0\.0\.\d:\d+\)\n", count=2)


def test_a_missing_header_is_cut_off_at_the_login_deadline(startServer) -> None:
    server = startServer("--files", "haproxy:tcp:0:interface=127.0.0.1", "--login-timeout", "1.5")
    port = int(server.waitLog(r"FilesFactory \(PROXY\) starting on (\d+)")[0].group(1))
    with asConn(connectFrom("127.0.0.1", port)) as conn:
        assert conn.rest() == b""  # closed by the server, with nothing said
    server.waitLog(r"files: no PROXY protocol header from 127\.0\.0\.1:\d+ in 1\.5s \(--login-timeout\), closing")


# -- IPv4 clients on a dual-stack listener ------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A plain served root, for servers started with every listening option given here."""
    root = tmp_path / "plain-root"
    root.mkdir()
    return populate(root)


def test_ipv4_client_on_a_dual_stack_listener_is_its_ipv4_address(root: Path, tmp_path: Path) -> None:
    """
    ``tcp6:0:interface=\\:\\:`` accepts IPv4 clients as ``::ffff:127.0.0.1``:
    --lockout-exempt 127.0.0.0/8 must cover them, --trusted-proxy's loopback
    default must trust such a balancer, and the logs must say 127.0.0.1.
    """
    server = startPlainServer(
        tmp_path / "logs", root,
        "--files", r"tcp6:0:interface=\:\:", "--echo", r"haproxy:tcp6:0:interface=\:\:",
        "--lockout-failures", "2", "--lockout-exempt", "127.0.0.0/8",
        ready=r"FilesFactory starting on (\d+)",
    )
    try:
        echoPort = int(server.waitLog(r"EchoFactory \(PROXY\) starting on (\d+)")[0].group(1))
        with asConn(connectFrom("127.0.0.1", server.files_port)) as conn:
            assert conn.line() == b"#Server Ready."
            conn.send(b"AUTH wrong-1\r\nAUTH wrong-2\r\n")
            assert conn.lines(2) == [b"!Bad password.", b"!Bad password."]
        with asConn(connectFrom("127.0.0.1", server.files_port)) as conn:
            conn.login()  # exempt: two failures locked nothing out
        with asConn(connectFrom("127.0.0.1", echoPort)) as echo:
            echo.send(b"PROXY TCP4 192.0.2.9 127.0.0.1 5000 8007\r\nping")
            assert echo.exact(4) == b"ping"  # a trusted (loopback) balancer
        server.waitLog(r"files: 127\.0\.0\.1:\d+ logged in as guest")
        text = server.logText()
        assert "locked out" not in text
        assert re.search(r"files: connection from 127\.0\.0\.1:\d+\n", text)
        assert "::ffff" not in text
    finally:
        stop(server)


# -- UNIX sockets: one key per local user -------------------------------------------------------

NOBODY = 65534


@pytest.fixture
def socketDir() -> Iterator[Path]:
    """A folder outside pytest's 0700 temp folders, so that user nobody can reach the socket in it."""
    base = Path(tempfile.mkdtemp(prefix="echofile-unix-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def asUser(uid: int, job: Callable[[], bytes]) -> bytes:
    """Run C{job} in a forked child as C{uid} (needs root); what it returns, or what went wrong."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, job())
            status = 0
        except BaseException as e:  # reported through the pipe
            os.write(write, f"child failed: {e!r}".encode())
        finally:
            os._exit(status)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    result = b"".join(chunks)
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def unixSession(path: Path, commands: bytes) -> bytes:
    """Connect to the UNIX socket, send C{commands}, return everything until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(commands)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_unix_socket_users_are_keyed_by_uid(root: Path, socketDir: Path) -> None:
    """
    One local user's failed AUTHs lock out that user (``uid:65534``) only:
    root, on the same socket, still logs in.
    """
    if os.geteuid() != 0:
        pytest.fail("this test needs root, to connect as two different users (it runs as root in CI)")
    path = socketDir / "files.sock"
    server = startPlainServer(
        socketDir / "logs", root,
        "--files", f"unix:{path}:mode=666", "--echo", "tcp:0:interface=127.0.0.1",
        "--lockout-failures", "2",
        ready=r"FilesFactory starting on .*files\.sock",
    )
    try:
        guesses = b"AUTH wrong-1\r\nAUTH wrong-2\r\nQUIT\r\n"
        assert asUser(NOBODY, lambda: unixSession(path, guesses)) == (
            b"#Server Ready.\r\n!Bad password.\r\n!Bad password.\r\n#Bye.\r\n"
        )
        server.waitLog(rf"files: uid:{NOBODY} locked out of AUTH")
        login = f"AUTH {PASSWORD}\r\nQUIT\r\n".encode()
        assert asUser(NOBODY, lambda: unixSession(path, login)) == b"#Server Ready.\r\n!Too many failed attempts.\r\n"
        assert unixSession(path, login) == b"#Server Ready.\r\n#You are logged in.\r\n#Bye.\r\n"  # root: not locked out
        server.waitLog(r"files: uid:0 logged in as guest")
        assert f"files: connection from uid:{NOBODY}\n" in server.logText()
    finally:
        stop(server)
