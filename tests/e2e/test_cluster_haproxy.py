"""
The issue's deployment, end to end: two ``twistd -n echofile --cluster
redis://...`` instances on ``haproxy:tcp:`` endpoints behind a real HAProxy
(round-robin, ``send-proxy-v2``), one redis-server of the test's own.

Clients connect to the balancer from 127.0.0.2 (lock-out tests from
127.0.0.3); which instance each landed on is read from the instances' logs
(``files: connection from 127.0.0.2:PORT (via PROXY from ...)``).  Every wait is for an event, bounded.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from deployhelpers import HAPROXY_HEAD, requireTool, startHaproxy, startServer, terminate
from e2ehelpers import PASSWORD, Conn, Server, stop, waitFor
from redishelpers import accepts, freePort, spawnRedis, stopRedis
from support import populate

CLIENT_HOST = "127.0.0.2"
UNAVAILABLE = b"!Chat is unavailable, try again later."

HAPROXY_CFG = HAPROXY_HEAD.format(extra="") + """
frontend echofile_files
    bind 127.0.0.1:{front}
    default_backend echofile_files

backend echofile_files
    balance roundrobin
    option tcp-check
    tcp-check expect string "#Server Ready."
    server a 127.0.0.1:{a} send-proxy-v2 check check-send-proxy inter 2s
    server b 127.0.0.1:{b} send-proxy-v2 check check-send-proxy inter 2s
"""


@dataclass
class Cluster:
    haproxy: subprocess.Popen
    front: int
    servers: list[Server]
    redisPort: int
    redis: subprocess.Popen
    directory: Path

    def connect(self, host: str = CLIENT_HOST) -> tuple[Conn, Server]:
        """A client through the balancer, and the instance it landed on (one connection at a time)."""
        before = [self.landed(s, host) for s in self.servers]
        conn = Conn.__new__(Conn)
        conn.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.sock.settimeout(10)
        conn.sock.bind((host, 0))
        conn.sock.connect(("127.0.0.1", self.front))
        conn.buf, conn.reset = b"", False
        assert conn.line() == b"#Server Ready."
        grown = waitFor(
            lambda: [s for s, n in zip(self.servers, before) if self.landed(s, host) > n], 10, "the connection's log line",
        )
        assert len(grown) == 1
        return conn, grown[0]

    @staticmethod
    def landed(server: Server, host: str) -> int:
        return len(re.findall(rf"files: connection from {re.escape(host)}:\d+ \(via PROXY from [^)\n]+\)\n", server.logText()))

    def redisCli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.redisPort), *args], capture_output=True, timeout=10, check=True, text=True,
        ).stdout.strip()

    def startRedis(self) -> None:
        self.redis = spawnRedis(self.redisPort, self.directory)
        waitFor(lambda: accepts(self.redisPort, self.redis), 10, "redis-server to accept connections")


def instanceOf(server: Server) -> str:
    return server.waitLog(r"chat: connected to Redis at \S+ as instance (\w+)")[0].group(1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    requireTool("redis-cli")
    (tmp_path / "root").mkdir()
    root = populate(tmp_path / "root")
    logs = tmp_path / "logs"
    redisPort = freePort()
    redis = spawnRedis(redisPort, tmp_path)
    servers: list[Server] = []
    haproxy = None
    try:
        waitFor(lambda: accepts(redisPort, redis), 10, "redis-server to accept connections")
        for _ in range(2):
            server = startServer(
                logs, root,
                "--files", "haproxy:tcp:0:interface=127.0.0.1", "--echo", "tcp:0:interface=127.0.0.1",
                "--trusted-proxy", "127.0.0.1", "--lockout-failures", "2",
                "--cluster", f"redis://127.0.0.1:{redisPort}/0",
                ready=r"FilesFactory \(PROXY\) starting on (\d+)",
            )
            servers.append(server)
            server.waitLog(r"chat: connected to Redis")
            server.waitLog(r"counting failed logins on every instance through Redis")
        front = freePort()
        haproxy, _ = startHaproxy(HAPROXY_CFG.format(front=front, a=servers[0].files_port, b=servers[1].files_port), logs)
        for server in servers:  # both passed a health check: both are in the rotation
            server.waitLog(r"files: connection from 127\.0\.0\.1:\d+ \(a PROXY health check\)", timeout=15)
        cluster = Cluster(haproxy, front, servers, redisPort, redis, tmp_path)
        yield cluster
        redis = cluster.redis
    finally:
        if haproxy is not None:
            terminate(haproxy)
        for server in servers:
            stop(server, check=server.proc.returncode != -signal.SIGKILL)
        stopRedis(redis)


def loggedIn(cluster: Cluster, n: int) -> list[tuple[Conn, Server]]:
    clients = []
    for _ in range(n):
        conn, server = cluster.connect()
        assert conn.command(f"AUTH {PASSWORD}") == b"#You are logged in."
        clients.append((conn, server))
    return clients


def who(conn: Conn, events: list[bytes] | None = None) -> list[bytes]:
    """WHO's names (or the unavailable reply); C{*} events before the reply go to C{events} if given."""
    header = conn.command("WHO")
    while events is not None and header.startswith(b"*"):
        events.append(header)
        header = conn.line()
    if header == UNAVAILABLE:
        return [header]
    return conn.lines(int(header.split()[0][1:]))


def test_chat_and_lockouts_across_instances_behind_haproxy(cluster: Cluster) -> None:
    (one, atOne), (two, atTwo), (three, atThree) = loggedIn(cluster, 3)
    assert atOne is not atTwo and atThree is atOne  # round-robin
    try:
        assert who(two) == [b"~guest1", b"~guest2", b"~guest3"]  # guest names unique across instances
        assert two.command("SAY hello from b") == b"#Said."
        assert one.line() == b"*~guest2: hello from b" and three.line() == b"*~guest2: hello from b"
        assert one.command("NICK ada") == b"#You are now ~ada."
        assert two.line() == b"*[server]: ~guest1 is now ~ada." == three.line()
        assert two.command("NICK ADA") == b"!Nickname ~ADA is in use."  # taken on the other instance
        assert three.command("NICK Ada") == b"!Nickname ~Ada is in use."  # and on its own
        assert two.command("MSG ~ada psst") == b"#Sent to ~ada."
        assert one.line() == b"*~guest2 (private): psst"
        assert one.command("MSG ~guest2 back") == b"#Sent to ~guest2."
        assert two.line() == b"*~ada (private): back"
        assert three.command("WHO") == b"#3 users online."
        assert three.lines(3) == [b"~ada", b"~guest2", b"~guest3"]  # MSG went to nobody else: no stray events
    finally:
        for conn in (one, two, three):
            conn.close()
    # Lock-outs: one failure on each instance (from 127.0.0.3) locks the address out on both.
    for _ in range(2):
        conn, _ = cluster.connect("127.0.0.3")
        with conn:
            assert conn.command("AUTH wrong") == b"!Bad password."
    for server in cluster.servers:
        server.waitLog(r"127\.0\.0\.3 locked out of AUTH .*all instances")
    for _ in range(2):
        conn, _ = cluster.connect("127.0.0.3")
        with conn:
            assert conn.command(f"AUTH {PASSWORD}") == b"!Too many failed attempts."
    landed = [Cluster.landed(s, "127.0.0.3") for s in cluster.servers]
    assert landed == [2, 2]  # the refusals came from both instances


def test_redis_restart(cluster: Cluster) -> None:
    (one, atOne), (two, atTwo) = loggedIn(cluster, 2)
    assert atOne is not atTwo
    try:
        assert who(one) == [b"~guest1", b"~guest2"]
        before = [len(s.logText().splitlines()) for s in cluster.servers]
        outage = time.monotonic()
        stopRedis(cluster.redis)
        for server in cluster.servers:
            server.waitLog(r"chat: lost Redis")
            server.waitLog(r"files: lost Redis, failed logins are counted on this instance only")
        for server in cluster.servers:  # backing off: every connection failed twice
            server.waitLog(r"Scheduling retry 2 to connect", count=4, timeout=15)
        for conn in (one, two):
            assert conn.command("SAY anyone?") == UNAVAILABLE
            assert who(conn) == [UNAVAILABLE]
            assert conn.command("NICK ada") == UNAVAILABLE
            assert conn.command("MSG ~guest1 hi") == UNAVAILABLE
            assert conn.command("FILE notes.txt") == b"#Sending notes.txt (12 bytes)."
            assert conn.exact(14) == b"hello notes\n\r\n" and conn.line() == b"#File notes.txt sent successfully."
            assert conn.command("LIST docs") == b"#1 entries in docs."
            assert conn.line() == b"9 readme.txt"
        # A guest who logs in meanwhile still gets a name (unique on its instance).
        three, atThree = cluster.connect()
        assert three.command(f"AUTH {PASSWORD}") == b"#You are logged in."
        cluster.startRedis()  # empty: every instance must announce its sessions again
        for server in cluster.servers:
            server.waitLog(r"chat: connected to Redis", count=2, timeout=20)  # the backoff is at most 10 s
            server.waitLog(r"counting failed logins on every instance through Redis", count=2, timeout=20)
        outage = time.monotonic() - outage
        # Presence is back for every session, on both instances' WHO (within a heartbeat).
        # Three had a name unique on its instance only: if the other instance has it too, whichever
        # claims it first in the (empty) new Redis keeps it, the other session is renamed and told.
        events: list[bytes] = []
        for conn in (one, two):
            waitFor(lambda: len(set(who(conn, events))) == 3, 15, "all three sessions in WHO again", interval=0.5)
        assert len(events) <= 1 and all(b"is taken on another instance, you are now ~guest3." in e for e in events)
        listed = who(one)
        assert sorted(listed) == [b"~guest1", b"~guest2", b"~guest3"]
        assert two.command("SAY back") == b"#Said."
        assert one.line().endswith(b": back")
        three.close()
        # No traceback storm: what each instance logged during the outage is the loss, the
        # reconnection attempts (backing off: at most one per connection and second) and the return.
        for server, start in zip(cluster.servers, before):
            added = server.logText().splitlines()[start:]
            assert not [line for line in added if "Traceback" in line or "Unhandled" in line]
            retries = [line for line in added if "Scheduling retry" in line]
            assert len(retries) <= 4 * (1 + outage), (outage, len(retries))  # 4 connections: chat and penalties
            other = [line for line in added if line not in retries and "files: " not in line]
            assert len(other) <= 10, other
            print(f"{server.files_port}: {len(added)} lines over a {outage:.1f}s outage, {len(retries)} retries")
    finally:
        for conn in (one, two):
            conn.close()


def test_an_instance_killed_leaves_who_within_15s(cluster: Cluster) -> None:
    (one, atOne), (two, atTwo) = loggedIn(cluster, 2)
    victim = atTwo
    assert atOne is not victim
    instance = instanceOf(victim)
    try:
        assert who(one) == [b"~guest1", b"~guest2"]
        ttl = int(cluster.redisCli("TTL", f"echofile:presence:{instance}"))
        assert 0 < ttl < 15  # the lease a dead instance leaves behind: gone within PROTOCOL.md's 15 s
        assert 0 < int(cluster.redisCli("TTL", "echofile:guest:guest2")) < 15
        victim.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.proc.wait(10)
        waitFor(lambda: who(one) == [b"~guest1"], 25, "the killed instance's user to leave WHO", interval=0.25)
        elapsed = time.monotonic() - killed
        print(f"the killed instance's user left WHO {elapsed:.1f}s after SIGKILL")
        assert one.command("NICK guest2") == b"#You are now ~guest2."  # its guest name expired with it
    finally:
        one.close()
        two.close()
