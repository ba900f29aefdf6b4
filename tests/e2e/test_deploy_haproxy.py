"""
Behind a real HAProxy (Debian package): two ``twistd echofile`` instances on
``haproxy:tcp:`` endpoints, ``send-proxy-v2``, round-robin, health checks
with ``check-send-proxy`` that expect the greeting.

Clients connect from 127.0.0.2 (any 127/8 address is loopback on Linux), the
balancer reaches the instances from 127.0.0.1, the only trusted proxy
(``--trusted-proxy 127.0.0.1``): the instances' logs must name 127.0.0.2,
health checks count as the balancer, and a client that reaches an instance
directly cannot forge its address with a PROXY header of its own.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from deployhelpers import HAPROXY_HEAD, freePort, startHaproxy, startServer, terminate
from e2ehelpers import PASSWORD, Conn, Server, stop
from support import populate

CLIENT_HOST = "127.0.0.2"

HAPROXY_CFG = HAPROXY_HEAD.format(extra="    option tcplog\n") + """
frontend echofile_files
    bind 127.0.0.1:{front}
    default_backend echofile_files

backend echofile_files
    balance roundrobin
    option tcp-check
    tcp-check expect string "#Server Ready."
    server a 127.0.0.1:{a} send-proxy-v2 check check-send-proxy inter 500ms
    server b 127.0.0.1:{b} send-proxy-v2 check check-send-proxy inter 500ms

frontend echofile_echo
    bind 127.0.0.1:{echoFront}
    default_backend echofile_echo

backend echofile_echo
    balance roundrobin
    server a 127.0.0.1:{echoA} send-proxy-v2
    server b 127.0.0.1:{echoB} send-proxy-v2
"""


class Balanced:
    def __init__(self, haproxy: subprocess.Popen, log: Path, front: int, echoFront: int, servers: list[Server]):
        self.haproxy, self.log, self.front, self.echoFront, self.servers = haproxy, log, front, echoFront, servers

    def connect(self, port: int | None = None) -> Conn:
        """A client connection from 127.0.0.2 to the balancer."""
        conn = Conn.__new__(Conn)
        conn.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.sock.settimeout(10)
        conn.sock.bind((CLIENT_HOST, 0))
        conn.sock.connect(("127.0.0.1", port or self.front))
        conn.buf = b""
        conn.reset = False
        return conn


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    root = populate(tmp_path_factory.mktemp("shared-root"))  # one --root for both instances
    logs = tmp_path_factory.mktemp("logs")
    servers: list[Server] = []
    haproxy = None
    try:
        for _ in range(2):
            server = startServer(
                logs, root,
                "--files", "haproxy:tcp:0:interface=127.0.0.1",
                "--echo", "haproxy:tcp:0:interface=127.0.0.1",
                "--trusted-proxy", "127.0.0.1",
                ready=r"FilesFactory \(PROXY\) starting on (\d+)",
            )
            server.echo_port = int(server.waitLog(r"EchoFactory \(PROXY\) starting on (\d+)")[0].group(1))
            servers.append(server)
        front, echoFront = freePort(), freePort()
        haproxy, haproxyLog = startHaproxy(HAPROXY_CFG.format(
            front=front, a=servers[0].files_port, b=servers[1].files_port,
            echoFront=echoFront, echoA=servers[0].echo_port, echoB=servers[1].echo_port,
        ), logs)
        # HAProxy binds its frontends before it runs checks: once both instances
        # passed one, it listens and both are in the rotation.  (No probe
        # connection: it would be a session of its own.)
        for server in servers:
            if haproxy.poll() is not None:
                pytest.fail(f"haproxy exited ({haproxy.returncode}):\n{haproxyLog.read_text(errors='replace')}")
            server.waitLog(r"files: connection from 127\.0\.0\.1:\d+ \(a PROXY health check\)", timeout=15)
        yield Balanced(haproxy, haproxyLog, front, echoFront, servers)
    finally:
        if haproxy is not None:
            terminate(haproxy)
        for server in servers:
            stop(server)


def test_sessions_on_both_instances_with_the_client_address(balanced: Balanced):
    conns = [balanced.connect() for _ in range(4)]
    try:
        for conn in conns:
            conn.login()
            assert conn.command("FILE notes.txt") == b"#Sending notes.txt (12 bytes)."
            assert conn.exact(12 + 2) == b"hello notes\n\r\n"
            assert conn.line() == b"#File notes.txt sent successfully."
    finally:
        for conn in conns:
            conn.close()
    for server in balanced.servers:
        # Round-robin: two sessions each, logged with the client's address (not the balancer's).
        peer = rf"{re.escape(CLIENT_HOST)}:\d+ \(via PROXY from 127\.0\.0\.1:\d+\)"
        server.waitLog(rf"files: connection from {peer}\n", count=2)
        server.waitLog(rf"files: {peer} logged in as guest", count=2)
        server.waitLog(rf"files: {peer} \(guest\) sent \S*notes\.txt \(12 bytes\)", count=2)
        text = server.logText()
        # the balancer itself never appears as a client
        assert not re.search(r"files: connection from 127\.0\.0\.1:\d+\n", text)


def test_health_checks_count_as_the_balancer(balanced: Balanced):
    """HAProxy's checks (PROXY v2 LOCAL) are greeted and logged as checks from the balancer, and counted as it."""
    for server in balanced.servers:
        server.waitLog(r"files: connection from 127\.0\.0\.1:\d+ \(a PROXY health check\)\n", count=2)
        server.waitLog(r"files: 127\.0\.0\.1:\d+ closed \([^)]+\) after [0-9.]+s\n", count=2)
        assert "refused" not in server.logText()
    # HAProxy saw both servers healthy (no DOWN transition in its log).
    assert " is DOWN" not in balanced.log.read_text(errors="replace")


def test_echo_through_the_balancer(balanced: Balanced):
    payload = bytes(range(256)) * 64
    for _ in range(2):
        conn = balanced.connect(balanced.echoFront)
        try:
            conn.send(payload)
            assert conn.exact(len(payload)) == payload
        finally:
            conn.close()


def test_a_direct_connection_without_header_is_dropped(balanced: Balanced):
    """The instances only speak to the balancer: a client that skips it sends no PROXY header and is cut off."""
    server = balanced.servers[0]
    with Conn(server.files_port) as conn:
        conn.send(b"AUTH " + PASSWORD.encode() + b"\r\n")
        assert conn.rest() == b""


def test_a_forged_header_from_an_untrusted_peer_is_refused(balanced: Balanced):
    """
    A client that reaches an instance directly and sends a PROXY header of
    its own (127.0.0.2 is not --trusted-proxy here) is closed without a
    greeting, whatever address it claims, and the refusal is logged.
    """
    server = balanced.servers[1]
    for claimed in ("198.51.100.1", "198.51.100.2"):
        conn = Conn.__new__(Conn)
        conn.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.sock.settimeout(10)
        conn.sock.bind((CLIENT_HOST, 0))
        conn.sock.connect(("127.0.0.1", server.files_port))
        conn.buf, conn.reset = b"", False
        with conn:
            try:
                conn.send(f"PROXY TCP4 {claimed} 127.0.0.1 5000 8008\r\nAUTH {PASSWORD}\r\n".encode())
            except OSError:  # already closed
                pass
            assert conn.rest() == b""
    server.waitLog(
        rf"files: {re.escape(CLIENT_HOST)}:\d+ is not a trusted proxy \(--trusted-proxy\): closed without reading", count=2,
    )
    assert "198.51.100" not in server.logText()
