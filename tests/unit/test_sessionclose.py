"""
What a files session does when its client closes (issue 16, round 3):
counted on a real TCP socket under a reactor that never runs, so "in the
same turn" is a fact the test can see (nothing is left for a later turn).
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure

from support import makeFilesFactory


@pytest.fixture
def tcpPair():
    """A connected pair of loopback TCP sockets: (the server's end, the client's end)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield server, client
    server.close()
    client.close()


def serve(factory, sock: socket.socket) -> tuple[object, tcp.Server, MemoryReactor]:
    """A session built and connected as Twisted's Port would, on a reactor that never runs."""
    reactor = MemoryReactor()
    peer = sock.getpeername()
    protocol = factory.buildProtocol(None)
    transport = tcp.Server(sock, protocol, peer, None, 1, reactor)
    transport.startReading()
    protocol.makeConnection(transport)
    return protocol, transport, reactor


def peerFinished(transport: tcp.Server) -> None:
    """The client's FIN, as the reactor hands it to a half-closeable transport."""
    transport.readConnectionLost(Failure(ConnectionDone()))


def test_client_close_ends_the_session_in_the_same_turn(served, tcpPair, logged) -> None:
    """
    A client that closes after the greeting: the session is closed, its
    close line written and its slot given back when the FIN is read, not
    one reactor turn later (loseConnection waited for a writability event
    that only a running reactor delivers, and scheduled a 10 s abort that
    connectionLost then cancelled).
    """
    server, client = tcpPair
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    protocol, transport, reactor = serve(factory, server)
    assert client.recv(100) == b"#Server Ready.\r\n"
    assert factory.limiter.countFor("127.0.0.1") == 1
    client.shutdown(socket.SHUT_WR)
    peerFinished(transport)
    assert not transport.connected and transport.disconnected
    assert transport not in reactor.readers and transport not in reactor.writers
    assert clock.getDelayedCalls() == []  # no abort left behind, none scheduled
    assert factory.limiter.countFor("127.0.0.1") == 0
    assert len(factory.sessions) == 0
    closed = [e for e in logged if "closed (" in (e.get("log_format") or "")]
    assert [e["why"] for e in closed] == ["client finished sending"]
    client.settimeout(5)
    assert client.recv(100) == b""  # an orderly close: a FIN, not a reset


def test_a_reply_still_being_sent_is_flushed_before_the_close(served, tcpPair) -> None:
    """What the transport still buffers keeps the close for after the flush (the public path)."""
    server, client = tcpPair
    clock = Clock()
    protocol, transport, reactor = serve(makeFilesFactory(served, clock), server)
    assert client.recv(100) == b"#Server Ready.\r\n"
    transport.write(b"#still buffered\r\n")  # the reactor never runs: it stays in the buffer
    client.shutdown(socket.SHUT_WR)
    peerFinished(transport)
    assert transport.connected and transport.disconnecting
    assert transport in reactor.writers
    assert len(clock.getDelayedCalls()) == 1  # the abort after the grace, should the flush stall


def test_accept_asks_the_transport_for_its_peer_once(served, tcpPair) -> None:
    """
    Each getPeer builds an address object: the socket's key, the log's
    peer text and the session's peer come from one (a wrapper's getPeer,
    which may differ from its socket's, is still asked: the PROXY and TLS
    tests cover those).
    """
    server, client = tcpPair
    calls = []

    class Counting(tcp.Server):
        def getPeer(self):
            calls.append(1)
            return super().getPeer()

    factory = makeFilesFactory(served, Clock())
    protocol = factory.buildProtocol(None)
    transport = Counting(server, protocol, server.getpeername(), None, 1, MemoryReactor())
    protocol.makeConnection(transport)
    assert client.recv(100) == b"#Server Ready.\r\n"
    assert len(calls) == 1
    assert protocol._peerAddress.port == client.getsockname()[1]
