"""
The counters of ``/metrics`` move with real events: real servers on
127.0.0.1, real clients, and the exposition scraped over HTTP with
twisted.web.client.Agent.  The registry is process-wide, so every check is
a delta between two scrapes.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody

from echofile.chat import EventQueue
from echofile.echo import EchoFactory
from echofile.hashing import FileHasher
from echofile.limits import ConnectionLimiter
from echofile.lockout import LoginPenalties
from echofile.metrics import ReactorLagProbe
from echofile.status import makeStatusSite
from support import PASSWORD, FakeThreads, makeFilesFactory
from loopbackhelpers import SERVER_PEM, Server, TLSServer

BIG = 64 * 1024 * 1024


@pytest.fixture
def scrape():
    """Scrapes a status site on a free loopback port: returns {(name, labels): value}."""
    port = pytest_twisted.blockon(
        serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(makeStatusSite(lambda: False))
    )
    url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()

    @inlineCallbacks
    def get():
        response = yield Agent(reactor).request(b"GET", url)
        assert response.code == 200
        body = yield readBody(response)
        return Samples(body)

    yield get
    pytest_twisted.blockon(port.stopListening())


class Samples(dict):
    def __init__(self, body: bytes) -> None:
        super().__init__()
        for family in text_string_to_metric_families(body.decode("utf-8")):
            for s in family.samples:
                self[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return after(name, **labels) - before(name, **labels)


def tick():
    return deferLater(reactor, 0.01, lambda: None)


@inlineCallbacks
def waitUntil(predicate):
    """Until the server side saw what the client did (an event, not a time)."""
    while not predicate():
        yield tick()


@inlineCallbacks
def session(server, password: str | None = PASSWORD):
    client = yield server.connect()
    yield client.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
    if password is not None:
        client.transport.write(b"AUTH " + password.encode() + b"\n")
        yield client.until(lambda d: d.endswith(b"#You are logged in.\r\n"))
    del client.data[:]
    return client


@inlineCallbacks
def ask(client, line: bytes, ending: bytes):
    del client.data[:]
    client.transport.write(line + b"\n")
    data = yield client.until(lambda d: d.endswith(ending))
    return bytes(data)


@pytest_twisted.inlineCallbacks
def test_sessions_logins_and_transfers_are_counted(served, scrape):
    (served / "big.bin").write_bytes(os.urandom(1024 * 1024))
    server = yield Server(makeFilesFactory(served, reactor, authFailureDelay=0.0)).start()
    try:
        before = yield scrape()
        first = yield session(server)
        second = yield session(server)
        during = yield scrape()
        assert delta(before, during, "echofile_sessions_open", service="files") == 2
        assert delta(before, during, "echofile_connections_accepted_total", service="files") == 2
        assert delta(before, during, "echofile_logins_total", result="success") == 2
        bad = yield session(server, password=None)
        yield ask(bad, b"AUTH wrong", b"!Bad password.\r\n")
        yield ask(first, b"FILE big.bin", b"#File big.bin sent successfully.\r\n")
        yield ask(first, b"RESUME 1000 big.bin", b"#File big.bin sent successfully.\r\n")
        yield ask(first, b"LIST", b" with space.txt\r\n")
        yield ask(first, b"HASH notes.txt", b".\r\n")
        yield ask(first, b"HASH notes.txt", b".\r\n")  # unchanged: from the cache
        yield ask(second, b"SAY hello", b"#Said.\r\n")
        yield first.until(lambda d: b"hello" in d)
        after = yield scrape()
    finally:
        yield server.stop()
    closed = yield scrape()
    assert delta(before, after, "echofile_logins_total", result="failure") == 1
    for command in ("FILE", "RESUME", "LIST", "HASH"):
        expected = 2 if command == "HASH" else 1
        assert delta(before, after, "echofile_transfers_total", command=command, result="ok") == expected, command
    assert delta(before, after, "echofile_sent_bytes_total", path="sendfile") == 2 * 1024 * 1024 - 1000
    assert delta(before, after, "echofile_transfer_duration_seconds_count") == 2
    assert delta(before, after, "echofile_hash_cache_hits_total") == 1
    assert delta(before, after, "echofile_chat_events_delivered_total") == 1
    assert delta(before, closed, "echofile_sessions_open", service="files") == 0


@pytest_twisted.inlineCallbacks
def test_an_interrupted_transfer_is_counted(served, scrape):
    with open(served / "huge.bin", "wb") as f:
        f.truncate(BIG)
    factory = makeFilesFactory(served, reactor)
    server = yield Server(factory).start()
    try:
        before = yield scrape()
        client = yield session(server)
        client.transport.write(b"FILE huge.bin\n")
        yield client.until(lambda d: len(d) > 1024 * 1024)
        client.transport.abortConnection()
        yield client.closed
        yield waitUntil(lambda: factory.limiter.total == 0)
        after = yield scrape()
    finally:
        yield server.stop()
    assert delta(before, after, "echofile_transfers_total", command="FILE", result="interrupted") == 1
    assert delta(before, after, "echofile_transfers_total", command="FILE", result="ok") == 0


@pytest_twisted.inlineCallbacks
def test_tls_and_chunked_bytes_are_counted_by_path(served, scrape):
    size = (served / "binary.bin").stat().st_size
    tls = yield TLSServer(
        makeFilesFactory(served, reactor), f"ssl:0:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}"
    ).start()
    proxied = yield Server(makeFilesFactory(served, reactor), "haproxy:tcp:0:interface=127.0.0.1").start()
    try:
        before = yield scrape()
        client = yield session(tls)
        yield ask(client, b"FILE binary.bin", b"sent successfully.\r\n")
        behind = yield proxied.connect()
        behind.transport.write(b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 8008\r\n")
        yield behind.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
        behind.transport.write(b"AUTH " + PASSWORD.encode() + b"\n")
        yield behind.until(lambda d: d.endswith(b"#You are logged in.\r\n"))
        yield ask(behind, b"FILE binary.bin", b"sent successfully.\r\n")
        after = yield scrape()
    finally:
        yield tls.stop()
        yield proxied.stop()
    assert delta(before, after, "echofile_sent_bytes_total", path="tls") == size
    assert delta(before, after, "echofile_sent_bytes_total", path="chunked") == size
    assert delta(before, after, "echofile_sent_bytes_total", path="sendfile") == 0


@pytest_twisted.inlineCallbacks
def test_refusals_are_counted_by_reason(served, scrape):
    capped = yield Server(makeFilesFactory(served, reactor, maxConnections=1)).start()
    perAddress = yield Server(makeFilesFactory(served, reactor, maxPerAddress=1)).start()
    untrusting = yield Server(makeFilesFactory(served, reactor, trustedProxies=[]), "haproxy:tcp:0:interface=127.0.0.1").start()
    proxied = yield Server(makeFilesFactory(served, reactor), "haproxy:tcp:0:interface=127.0.0.1").start()
    handshake = yield Server(
        makeFilesFactory(served, reactor, loginTimeout=0.2),
        f"ssl:0:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}",
    ).start()
    echo = yield Server(EchoFactory(reactor, ConnectionLimiter(100, 100, "echo"), 300.0)).start()
    try:
        before = yield scrape()
        for server in (capped, perAddress):
            yield session(server, password=None)
            refused = yield server.connect()
            yield refused.closed
        client = yield untrusting.connect()
        yield client.closed
        client = yield proxied.connect()
        client.transport.write(b"NOT A PROXY HEADER\r\n")
        yield client.closed
        client = yield handshake.connect()  # plain TCP to a TLS port: the handshake never completes
        yield client.closed
        yield echo.connect()
        yield waitUntil(lambda: echo.factory.limiter.total == 1)
        after = yield scrape()
    finally:
        for server in (capped, perAddress, untrusting, proxied, handshake, echo):
            yield server.stop()
    for reason in ("total_cap", "per_address_cap", "untrusted_proxy", "invalid_proxy_header", "handshake_timeout"):
        assert delta(before, after, "echofile_connections_refused_total", service="files", reason=reason) == 1, reason
    assert delta(before, after, "echofile_sessions_open", service="echo") == 1
    assert delta(before, after, "echofile_connections_accepted_total", service="echo") == 1


@pytest_twisted.inlineCallbacks
def test_lockouts_are_counted_and_shown_while_active(served, scrape):
    penalties = LoginPenalties(reactor, maxFailures=2, window=600, duration=600)
    server = yield Server(makeFilesFactory(served, reactor, authFailureDelay=0.0, penalties=penalties)).start()
    try:
        before = yield scrape()
        client = yield session(server, password=None)
        yield ask(client, b"AUTH wrong", b"!Bad password.\r\n")
        yield ask(client, b"AUTH wrong", b"!Bad password.\r\n")
        locked = yield scrape()
        client = yield session(server, password=None)
        yield ask(client, b"AUTH " + PASSWORD.encode(), b"!Too many failed attempts.\r\n")
        after = yield scrape()
    finally:
        yield server.stop()
    assert delta(before, locked, "echofile_lockouts_started_total") == 1
    assert locked("echofile_lockouts_active") == 1
    assert delta(locked, after, "echofile_logins_total", result="locked_out") == 1
    assert delta(locked, after, "echofile_logins_total", result="success") == 0


@pytest_twisted.inlineCallbacks
def test_hash_jobs_running_and_waiting(served, scrape):
    threads = FakeThreads()  # jobs run when the test says so
    server = yield Server(makeFilesFactory(served, reactor, hashes=FileHasher(threads, maxJobs=1))).start()
    try:
        first = yield session(server)
        second = yield session(server)
        first.transport.write(b"HASH notes.txt\n")
        yield waitUntil(lambda: threads.calls == 1)
        second.transport.write(b"HASH binary.bin\n")
        yield waitUntil(lambda: threads.calls == 1 and server.factory.hashes.queued == 1)
        waiting = yield scrape()
        threads.runNext()  # the first job ends: the second starts
        yield first.until(lambda d: d.endswith(b".\r\n"))
        secondRunning = yield scrape()
        threads.runNext()
        yield second.until(lambda d: d.endswith(b".\r\n"))
        done = yield scrape()
    finally:
        yield server.stop()
    assert waiting("echofile_hash_jobs_running") == 1 and waiting("echofile_hash_jobs_waiting") == 1
    assert secondRunning("echofile_hash_jobs_running") == 1 and secondRunning("echofile_hash_jobs_waiting") == 0
    assert done("echofile_hash_jobs_running") == 0 and done("echofile_hash_jobs_waiting") == 0


@pytest_twisted.inlineCallbacks
def test_chat_events_dropped_from_a_full_queue(served, scrape):
    with open(served / "huge.bin", "wb") as f:
        f.truncate(BIG)
    server = yield Server(makeFilesFactory(served, reactor)).start()
    try:
        reader = yield session(server)
        reader.transport.pauseProducing()  # a client that does not read...
        reader.transport.write(b"FILE huge.bin\n")  # ... in the middle of a body: events wait in its queue
        talker = yield session(server)
        before = yield scrape()
        count = EventQueue().maxEvents + 20
        talker.transport.write(b"SAY hello\n" * count)
        yield talker.until(lambda d: d.count(b"#Said.\r\n") == count)
        after = yield scrape()
    finally:
        yield server.stop()
    assert delta(before, after, "echofile_chat_events_dropped_total") == 20
    assert delta(before, after, "echofile_chat_events_delivered_total") == count


@pytest_twisted.inlineCallbacks
def test_reactor_lag_is_observed(scrape):
    probe = ReactorLagProbe(reactor, interval=0.01)
    before = yield scrape()
    probe.startService()
    try:
        while True:
            after = yield scrape()
            if delta(before, after, "echofile_reactor_lag_seconds_count") >= 3:
                break
    finally:
        probe.stopService()


@pytest_twisted.inlineCallbacks
def test_cluster_broker_connected_is_one_while_redis_is_up(tmp_path, scrape):
    from redishelpers import freePort, startRedis, stopRedis, until

    from echofile.redischat import RedisChat

    port = freePort()
    process = yield startRedis(port, tmp_path)
    chat = RedisChat(f"redis://127.0.0.1:{port}/0", reactor, instance="metrics")
    try:
        before = yield scrape()
        chat.startService()
        yield until(lambda: chat.available, "the instance to reach Redis")
        up = yield scrape()
        stopRedis(process)
        yield until(lambda: not chat.available, "the instance to notice Redis is gone")
        down = yield scrape()
    finally:
        stopRedis(process)
        yield chat.stopService()
    assert before("echofile_cluster_broker_connected") == 0
    assert up("echofile_cluster_broker_connected") == 1
    assert down("echofile_cluster_broker_connected") == 0
