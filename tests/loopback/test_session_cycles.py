"""
A closed session is freed at once, by reference counting, not left for the
garbage collector: real sessions on 127.0.0.1, the collector switched off.

Every closed files or echo session used to be a reference cycle (the
session, its timer, the timer's bound method of the session) holding about
ten objects (transport, address, admission, close...); a failed AUTH (the
delayed answer raised an error its own frame held) and a FILE over TLS (the
sender, kept by Twisted's cooperator task in a cycle, held the session) too.
In a reconnect storm the collector walked them all: about 19 µs of
collection per session, against 3.4 µs now (docs/performance.md, "Round 4b").
Then (the second hunt of round 4b): errbacks that raised or trapped (MSG to a user not online,
NICK in use, a HASH cancelled or unreadable), a connection that never became
a session (bad PROXY header, TLS handshake timeout), a TLS session closed by
its client, and chat commands while the broker is away.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import pytest_twisted
from collections import Counter

from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks
from twisted.logger import globalLogBeginner, globalLogPublisher

from echofile.echo import EchoFactory
from echofile.hashing import FileHasher, HashUnavailable
from echofile.limits import ConnectionLimiter
from echofile.redischat import RedisChat
from echofile.shutdown import GracefulShutdown
from echofile.tlslayer import EchofileTLS
from loopbackhelpers import SERVER_PEM, Server, TLSServer, deferLaterTick
from redishelpers import stopRedis, until
from support import PASSWORD, FakeThreads, makeFilesFactory

TLS = f"ssl:0:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}"
PROXY_HEADER = b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 8008\r\n"


@pytest.fixture
def noCollector():
    # Before twistd begins logging, Twisted keeps every event in a buffer; an event
    # logged by a session (its log_source) would keep it alive here, never in the server.
    buffer = getattr(globalLogBeginner, "_temporaryObserver", None)
    if buffer is not None:
        globalLogPublisher.removeObserver(buffer)
    gc.collect()
    gc.disable()
    yield
    gc.enable()
    if buffer is not None:
        globalLogPublisher.addObserver(buffer)


def cyclicGarbage() -> list:
    """What only the collector would free now (found, then let go of)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    garbage = list(gc.garbage)
    gc.garbage.clear()
    gc.set_debug(0)
    return garbage


def recording(*factories):
    """C{factories}, keeping a weak reference to every protocol they build (in one list)."""
    built: list[weakref.ref] = []
    for factory in factories:
        build = factory.buildProtocol

        def buildProtocol(addr, build=build):
            protocol = build(addr)
            if protocol is not None:
                built.append(weakref.ref(protocol))
            return protocol

        factory.buildProtocol = buildProtocol
    return built


@inlineCallbacks
def settle(server):
    yield server.stop()
    for _ in range(5):  # the server's connectionLost, then the frames of the reactor turn that ran it
        yield deferLaterTick()



def assertFreed(built):
    assert built, "no session was built"
    alive = sum(ref() is not None for ref in built)
    if alive:
        kinds = Counter(type(o).__name__ for o in cyclicGarbage()).most_common(12)
        pytest.fail(f"{alive} of {len(built)} closed sessions still alive without the collector; in cycles: {kinds}")


@inlineCallbacks
def loggedIn(server):
    client = yield server.connect()
    client.transport.write(b"AUTH " + PASSWORD.encode() + b"\r\n")
    yield client.until(lambda data: data.endswith(b"#You are logged in.\r\n"))
    return client


@inlineCallbacks
def ask(client, line: bytes, ending: bytes):
    start = len(client.data)
    client.transport.write(line + b"\r\n")
    yield client.until(lambda data: data[start:].endswith(ending))
    return bytes(client.data[start:])


@inlineCallbacks
def quit(*clients):
    for client in clients:
        client.transport.write(b"QUIT\r\n")
        yield client.closed


@pytest_twisted.inlineCallbacks
def test_files_sessions_that_end_every_way_are_freed_without_the_collector(served, noCollector):
    factory = makeFilesFactory(served, reactor)
    built = recording(factory)
    server = yield Server(factory).start()
    greeted = yield server.connect()  # greeted, then the client closes
    yield greeted.until(lambda data: b"\n" in data)
    greeted.transport.loseConnection()
    yield greeted.closed
    worked = yield server.connect()  # logged in, every kind of command, then QUIT
    worked.transport.write(
        f"AUTH {PASSWORD}\r\nLIST\r\nFILE notes.txt\r\nHASH notes.txt\r\nSAY hello\r\nWHO\r\n"
        "NICK cyclist\r\nFILE nope\r\nQUIT\r\n".encode()
    )
    yield worked.closed
    failed = yield server.connect()  # a wrong password (answered after the AUTH delay), then QUIT
    failed.transport.write(b"AUTH wrong\r\nQUIT\r\n")
    yield failed.closed
    assert b"!" in failed.data and failed.data.endswith(b"#Bye.\r\n")
    assert b"hello notes" in worked.data and worked.data.endswith(b"#Bye.\r\n")
    aborted = yield server.connect()  # reset by the client
    yield aborted.until(lambda data: b"\n" in data)
    aborted.transport.abortConnection()
    yield aborted.closed
    yield settle(server)
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_tls_files_sessions_are_freed_without_the_collector(served, noCollector):
    factory = makeFilesFactory(served, reactor)
    built = recording(factory)
    server = yield TLSServer(factory, f"ssl:0:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}").start()
    client = yield server.connect()
    client.transport.write(f"AUTH {PASSWORD}\r\nFILE notes.txt\r\nQUIT\r\n".encode())
    yield client.closed
    assert b"hello notes" in client.data
    yield settle(server)
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_echo_sessions_are_freed_without_the_collector(noCollector):
    factory = EchoFactory(reactor, ConnectionLimiter(100, 100, "echo"), 300.0)
    built = recording(factory)
    server = yield Server(factory).start()
    client = yield server.connect()
    client.transport.write(b"ping")
    yield client.until(lambda data: data == b"ping")
    client.transport.loseConnection()
    yield client.closed
    yield settle(server)
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_chat_between_sessions_is_freed_without_the_collector(served, noCollector):
    """MSG to a user not online and NICK in use were errbacks that trapped and raised: Failure, traceback, frame, Failure."""
    factory = makeFilesFactory(served, reactor)
    built = recording(factory)
    server = yield Server(factory).start()
    one = yield loggedIn(server)
    two = yield loggedIn(server)
    yield ask(one, b"SAY hello", b"#Said.\r\n")
    yield two.until(lambda data: data.endswith(b"*~guest1: hello\r\n"))
    assert (yield ask(two, b"MSG ~guest1 psst", b"\r\n")) == b"#Sent to ~guest1.\r\n"
    yield one.until(lambda data: data.endswith(b"*~guest2 (private): psst\r\n"))
    yield ask(one, b"WHO", b"~guest2\r\n")
    assert (yield ask(one, b"MSG nobody hi", b"\r\n")) == b"!No such user online: nobody.\r\n"
    yield ask(one, b"NICK ada", b"#You are now ~ada.\r\n")
    assert (yield ask(two, b"NICK ada", b"in use.\r\n")).endswith(b"!Nickname ~ada is in use.\r\n")
    yield quit(one, two)
    yield settle(server)
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_file_commands_and_refusals_are_freed_without_the_collector(served, noCollector):
    factory = makeFilesFactory(served, reactor)
    built = recording(factory)
    server = yield Server(factory).start()
    refused = yield server.connect()  # before login
    refused.transport.write(b"FILE notes.txt\r\nLIST\r\nSAY x\r\nBOGUS\r\nHELP\r\nQUIT\r\n")
    yield refused.closed
    assert refused.data.count(b"!") == 4
    client = yield loggedIn(server)
    yield ask(client, b"RESUME 6 notes.txt", b"sent successfully.\r\n")
    for line in (b"HASH notes.txt", b"HASH notes.txt", b"FILE missing", b"HASH missing", b"LIST missing", b"RESUME 99 notes.txt"):
        yield ask(client, line, b".\r\n")
    yield ask(client, b"LIST docs", b"readme.txt\r\n")
    yield quit(client)
    yield settle(server)
    assertFreed(built)


class _UnreadableHasher:
    """C{FileHasher.digest} when it cannot even look at the file (its fstat fails)."""

    def digest(self, opened):
        opened.close()
        raise HashUnavailable("fstat failed")


@pytest.mark.parametrize("hashes", ["refused at once", "read failed"])
@pytest_twisted.inlineCallbacks
def test_a_hash_that_cannot_be_made_is_freed_without_the_collector(served, noCollector, hashes):
    """The refusal was kept in a closure of the frame its own traceback held, and raised in an errback."""
    hasher = _UnreadableHasher() if hashes == "refused at once" else FileHasher(lambda work: fail(OSError(5, "EIO")))
    factory = makeFilesFactory(served, reactor, hashes=hasher)
    built = recording(factory)
    server = yield Server(factory).start()
    client = yield loggedIn(server)
    assert (yield ask(client, b"HASH notes.txt", b"\r\n")).endswith(b"!File notes.txt could not be opened.\r\n")
    yield quit(client)
    yield settle(server)
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_a_hash_cancelled_by_a_reset_is_freed_without_the_collector(served, noCollector):
    """The cancelled digest's errback trapped, so re-raised, the CancelledError: a Failure cycle holding the session."""
    threads = FakeThreads()
    factory = makeFilesFactory(served, reactor, hashes=FileHasher(threads))
    built = recording(factory)
    server = yield Server(factory).start()
    client = yield loggedIn(server)
    client.transport.write(b"HASH binary.bin\r\n")
    while not threads.pending:
        yield deferLaterTick()
    client.transport.abortConnection()
    yield client.closed
    yield settle(server)
    threads.runAll()  # the job, told to stop, gives its descriptor back
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_connections_that_never_became_sessions_are_freed_without_the_collector(served, noCollector):
    """The admission kept the session's bound methods (onReady, onBusy) when it never became ready."""
    proxied = makeFilesFactory(served, reactor)
    tls = makeFilesFactory(served, reactor, loginTimeout=0.05)
    built = recording(proxied, tls)
    behind = yield Server(proxied, "haproxy:tcp:0:interface=127.0.0.1").start()
    client = yield behind.connect()
    client.transport.write(b"NOT A PROXY HEADER\r\n")
    yield client.closed
    handshaking = yield TLSServer(tls, TLS).start()
    client = yield Server.connect(handshaking)  # plain TCP: the handshake never completes
    yield client.closed
    yield settle(behind)
    yield settle(handshaking)
    assert len(built) == 2
    assertFreed(built)


@pytest.mark.parametrize("ending", ["close_notify", "reset"])
@pytest_twisted.inlineCallbacks
def test_tls_sessions_closed_by_their_client_are_freed_without_the_collector(served, noCollector, ending):
    """
    Twisted's TLS layer kept the session's producer after the connection was lost (session, TLS,
    membrane, session); a reset's Failure was kept by Twisted's frame its traceback held (TLS layer, socket, OpenSSL).
    """
    factory = makeFilesFactory(served, reactor)
    built = recording(factory)
    server = yield TLSServer(factory, TLS).start()
    client = yield loggedIn(server)
    if ending == "reset":
        client.transport.abortConnection()
    else:
        client.transport.loseConnection()
    yield client.closed
    yield settle(server)
    assertFreed(built)
    assert [o for o in cyclicGarbage() if isinstance(o, EchofileTLS)] == []


@pytest_twisted.inlineCallbacks
def test_sessions_behind_the_proxy_protocol_are_freed_without_the_collector(served, noCollector):
    plain, tls = makeFilesFactory(served, reactor), makeFilesFactory(served, reactor)
    built = recording(plain, tls)
    for server in (Server(plain, "haproxy:tcp:0:interface=127.0.0.1"), TLSServer(tls, "haproxy:" + TLS)):
        yield server.start()
        client = yield server.connect()
        client.transport.write(PROXY_HEADER + f"AUTH {PASSWORD}\r\nFILE notes.txt\r\nQUIT\r\n".encode())
        yield client.closed
        assert b"hello notes" in client.data and client.data.endswith(b"#Bye.\r\n")
        yield settle(server)
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_sessions_the_server_ends_are_freed_without_the_collector(served, noCollector):
    """The idle and login timeouts, the per-address cap, a shutdown; and a telnet client's IAC bytes."""
    idle = makeFilesFactory(served, reactor, idleTimeout=0.05)
    login = makeFilesFactory(served, reactor, loginTimeout=0.05)
    capped = makeFilesFactory(served, reactor, maxPerAddress=1)
    built = recording(idle, login, capped)
    servers = []
    for factory in (idle, login, capped):
        servers.append((yield Server(factory).start()))
    client = yield loggedIn(servers[0])
    yield client.closed
    client = yield servers[1].connect()
    yield client.closed
    client = yield servers[2].connect()
    client.transport.write(b"\xff\xfb\x18\xff\xfd\x03HELP\r\n")
    yield client.until(lambda data: data.endswith(b"QUIT\r\n") or b"QUIT" in data)
    busy = yield servers[2].connect()
    yield busy.closed
    shutdown = GracefulShutdown([capped.sessions], reactor, 10.0, installSignalHandlers=False)
    shutdown.startService()
    yield shutdown.stopService()
    yield client.closed
    assert client.data.endswith(b"!Server shutting down.\r\n") and b"busy" in busy.data.lower()
    for server in servers:
        yield settle(server)
    assertFreed(built)


@pytest_twisted.inlineCallbacks
def test_echo_sessions_over_tls_and_behind_a_proxy_are_freed_without_the_collector(noCollector):
    tls = EchoFactory(reactor, ConnectionLimiter(100, 100, "echo"), 300.0)
    proxied = EchoFactory(reactor, ConnectionLimiter(100, 100, "echo"), 300.0)
    built = recording(tls, proxied)
    for server, first in ((TLSServer(tls, TLS), b""), (Server(proxied, "haproxy:tcp:0:interface=127.0.0.1"), PROXY_HEADER)):
        yield server.start()
        client = yield server.connect()
        client.transport.write(first + b"ping")
        yield client.until(lambda data: data == b"ping")
        client.transport.loseConnection()
        yield client.closed
        yield settle(server)
    assertFreed(built)


@pytest.fixture
def redisChat(redisPort):
    chat = RedisChat(f"redis://127.0.0.1:{redisPort[0]}/0", reactor, instance="a")
    chat.startService()
    pytest_twisted.blockon(until(lambda: chat.available, "Redis"))
    yield chat
    pytest_twisted.blockon(chat.stopService())


@pytest_twisted.inlineCallbacks
def test_cluster_chat_sessions_are_freed_without_the_collector(served, redisChat, redisPort, noCollector):
    """
    With the broker away, every chat request failed inside RedisChat's inlineCallbacks, where Twisted
    throws the Failure into the generator from a frame that holds it: now answered without asking.
    """
    factory = makeFilesFactory(served, reactor, chat=redisChat)
    built = recording(factory)
    server = yield Server(factory).start()
    one = yield loggedIn(server)
    two = yield loggedIn(server)
    yield ask(one, b"SAY hello", b"#Said.\r\n")
    yield ask(one, b"WHO", b"~guest2\r\n")
    yield ask(one, b"MSG nobody hi", b"!No such user online: nobody.\r\n")
    stopRedis(redisPort[1])
    yield until(lambda: not redisChat.available, "the instance to notice Redis is gone")
    for line in (b"SAY hi", b"MSG ~guest2 hi", b"NICK ada", b"WHO"):
        assert (yield ask(one, line, b"\r\n")) == b"!Chat is unavailable, try again later.\r\n"
    yield quit(one, two)
    yield settle(server)
    assertFreed(built)
