"""
A closed session is freed at once, by reference counting, not left for the
garbage collector: real sessions on 127.0.0.1, the collector switched off.

Every closed files or echo session used to be a reference cycle (the
session, its timer, the timer's bound method of the session) holding about
ten objects (transport, address, admission, close...); a failed AUTH (the
delayed answer raised an error its own frame held) and a FILE over TLS (the
sender, kept by Twisted's cooperator task in a cycle, held the session) too.
In a reconnect storm the collector walked them all: about 19 µs of
collection per session, against 3.4 µs now (docs/performance.md, "Round 4").
Error paths that raise inside Deferred callbacks (MSG to a user who is not
online, an unavailable chat service) still leave a cycle, Twisted's Failure
and its traceback, for the collector.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from echofile.echo import EchoFactory
from echofile.limits import ConnectionLimiter
from loopbackhelpers import SERVER_PEM, Server, TLSServer, deferLaterTick
from support import PASSWORD, makeFilesFactory


@pytest.fixture
def noCollector():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def recording(factory):
    """C{factory}, keeping a weak reference to every protocol it builds."""
    built: list[weakref.ref] = []
    build = factory.buildProtocol

    def buildProtocol(addr):
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
    alive = [ref() for ref in built if ref() is not None]
    assert alive == [], f"{len(alive)} of {len(built)} closed sessions still alive without the collector"


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
