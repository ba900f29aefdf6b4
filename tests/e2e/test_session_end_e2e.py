"""
How sessions end (PROTOCOL.md rev 2) against the real ``twistd -n echofile``:
when the server ends a session while the client still has commands on
their way, everything it sent -- a multi-megabyte body in flight included --
reaches the client, followed by a clean FIN, never a RST.

Closing a socket with unread input makes the kernel reset the connection,
which throws away what the client had not read yet.  The clients here
pipeline commands that arrive while a body is being sent (so they are
still unread when the session ends) and read slowly, so that megabytes are
still in the socket buffers at that moment.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Callable

from deployhelpers import makeCertificate, startServer as startDeployServer
from e2ehelpers import Conn, Server, makeTree, stop, waitExit
from support import PASSWORD

SIZE = 10 * 1024 * 1024
NAME = "ten-mb.bin"


def slowReader(server: Server) -> Conn:
    """A logged-in client with a small receive buffer (so the server's side holds the data in flight)."""
    conn = server.files(rcvbuf=64 * 1024, timeout=30)
    conn.login()
    return conn


def readSlowly(conn: Conn) -> tuple[bytes, str]:
    """Everything until the server closes, a chunk at a time with a pause: the data and how it ended."""
    data, conn.buf = conn.buf, b""
    while True:
        try:
            chunk = conn.sock.recv(64 * 1024)
        except ConnectionResetError:
            return data, "RST"
        if not chunk:
            return data, "FIN"
        data += chunk
        time.sleep(0.002)


def served(tmp_path: Path) -> tuple[Path, bytes]:
    root = makeTree(tmp_path / "graceful")
    content = os.urandom(SIZE)
    (root / NAME).write_bytes(content)
    return root, content


def expected(content: bytes, lastLine: bytes) -> bytes:
    return (
        f"#Sending {NAME} ({SIZE} bytes).\r\n".encode() + content
        + f"\r\n#File {NAME} sent successfully.\r\n".encode() + lastLine + b"\r\n"
    )


def report(what: str, data: bytes, how: str) -> None:
    print(f"\n{what}: client received {len(data)} bytes, then {how}")


def test_quit_pipelined_during_a_body(startServer: Callable[..., Server], tmp_path: Path) -> None:
    """
    FILE + QUIT in one packet, then one more line while the body is on its
    way (still unread when QUIT ends the session): the whole body, its
    trailer, ``#Bye.``, then FIN.
    """
    root, content = served(tmp_path)
    server = startServer(root=root)
    conn = slowReader(server)
    try:
        conn.send(f"FILE {NAME}\r\nQUIT\r\n".encode())
        conn.exact(100_000)
        conn.send(b"HELP\r\n")
        data, how = readSlowly(conn)
    finally:
        conn.close()
    report("FILE + QUIT", data, how)
    assert how == "FIN"
    whole = expected(content, b"#Bye.")
    assert len(data) == len(whole) - 100_000 and data == whole[100_000:]


def test_shutdown_with_a_pipelined_file(startServer: Callable[..., Server], tmp_path: Path) -> None:
    """
    SIGTERM while a body is being sent and the client already sent its next
    FILE: the whole body, its trailer, ``!Server shutting down.``, then FIN;
    the pipelined FILE is never run and the server exits cleanly.
    """
    root, content = served(tmp_path)
    server = startServer(root=root)
    conn = slowReader(server)
    try:
        conn.send(f"FILE {NAME}\r\n".encode())
        assert conn.line() == f"#Sending {NAME} ({SIZE} bytes).".encode()
        conn.exact(100_000)
        conn.send(f"FILE {NAME}\r\n".encode())  # pipelined: arrives while the first body is sent
        server.proc.send_signal(signal.SIGTERM)
        server.waitLog(r"Shutting down: draining 1 sessions")
        data, how = readSlowly(conn)
    finally:
        conn.close()
    report("SIGTERM with a pipelined FILE", data, how)
    assert how == "FIN"
    whole = expected(content, b"!Server shutting down.")
    header = len(f"#Sending {NAME} ({SIZE} bytes).\r\n")
    assert data == whole[header + 100_000:]
    waitExit(server, 15)
    log = server.logText()
    assert "Traceback" not in log and "Aborting" not in log


def test_tls_quit_pipelined_during_a_body(tmp_path: Path) -> None:
    """
    The same over TLS (``ssl:`` endpoint): the whole body, ``#Bye.``, then
    the server's close_notify (a clean TLS EOF, not a bare FIN or a RST).
    A TCP half-close under TLS would fail here (SSLEOFError).
    """
    root, content = served(tmp_path)
    certificate = makeCertificate(tmp_path / "tls")
    server = startDeployServer(
        tmp_path / "logs", root,
        "--echo", "tcp:0:interface=127.0.0.1",
        "--files", f"ssl:0:interface=127.0.0.1:privateKey={certificate.key}:certKey={certificate.cert}",
        ready=r"FilesFactory \(TLS\) starting on (\d+)",
    )
    try:
        context = ssl.create_default_context(cafile=str(certificate.cert))
        context.check_hostname = False
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        raw.settimeout(30)
        raw.connect(("127.0.0.1", server.files_port))
        sock = context.wrap_socket(raw, suppress_ragged_eofs=False)  # a bare FIN raises SSLEOFError
        conn = Conn.__new__(Conn)
        conn.sock, conn.buf, conn.reset = sock, b"", False
        try:
            conn.login(PASSWORD)
            conn.send(f"FILE {NAME}\r\nQUIT\r\n".encode())
            conn.exact(100_000)
            conn.send(b"HELP\r\n")
            data, how = readSlowly(conn)
        finally:
            sock.close()
    finally:
        stop(server)
    report("TLS FILE + QUIT", data, how)
    assert how == "FIN"  # recv() returned b"": the server's close_notify
    whole = expected(content, b"#Bye.")
    assert data == whole[100_000:]
