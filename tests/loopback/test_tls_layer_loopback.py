"""
echofile.tlslayer over real sockets: an C{ssl:} listener as twistd makes it
(L{fasterTLS}) accepts with L{EchofileTLS}, and what a client sees is what
Twisted's own TLS layer gives it: the greeting after the handshake, a FILE
body byte for byte, C{close_notify} when the server ends the session, and a
TCP close without one reported as a lost connection, not a clean close.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport, ITCPTransport
from twisted.logger import formatEvent, globalLogPublisher

from echofile.tlslayer import EchofileTLS
from loopbackhelpers import SERVER_PEM, Collector, TLSServer, deferLaterTick
from support import PASSWORD, makeFilesFactory

TLS = f"ssl:0:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}"


class Ending(Collector):
    """A Collector that keeps why its connection ended."""

    reason = None

    def connectionLost(self, reason=None) -> None:
        self.reason = reason
        super().connectionLost(reason)


@pytest.fixture
def closeLines():
    lines: list[str] = []

    def observe(event: dict) -> None:
        text = formatEvent(event)
        if " closed (" in text:
            lines.append(text)

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@inlineCallbacks
def listening(served):
    server = TLSServer(makeFilesFactory(served, reactor), TLS)
    yield server.start()
    return server


@inlineCallbacks
def greeted(server, client=None):
    client = client or Ending()
    yield _connect(server, client)
    yield client.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
    return client


def _connect(server, client):
    from twisted.internet import ssl
    from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol

    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port, ssl.CertificateOptions())
    server.clients.append(client)
    return connectProtocol(endpoint, client)


@pytest_twisted.inlineCallbacks
def test_ssl_listener_accepts_with_echofile_tls(served):
    server = yield listening(served)
    try:
        assert server.port.factory.protocol is EchofileTLS
        client = yield greeted(server)
        assert bytes(client.data) == b"#Server Ready.\r\n"  # nothing before the handshake, the greeting after it
        (session,) = server.factory.sessions.sessions
        assert type(session.transport) is EchofileTLS
        # The session sees the transport it saw before: TLS, over TCP.
        assert ISSLTransport.providedBy(session.transport)
        assert ITCPTransport.providedBy(session.transport)
        assert session.transport.getPeer().host == "127.0.0.1"
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_file_body_is_exact_and_the_server_sends_close_notify(served):
    body = os.urandom(3 * 1024 * 1024 + 17)
    (served / "big.bin").write_bytes(body)
    server = yield listening(served)
    try:
        client = yield greeted(server)
        client.transport.write(b"AUTH " + PASSWORD.encode() + b"\n")
        yield client.until(lambda d: d.endswith(b"#You are logged in.\r\n"))
        del client.data[:]
        client.transport.write(b"FILE big.bin\nQUIT\n")
        yield client.closed
        assert bytes(client.data) == (b"#Sending big.bin (%d bytes).\r\n" % len(body) + body
                                      + b"\r\n#File big.bin sent successfully.\r\n#Bye.\r\n")
        # Twisted's client reports a TCP close without the server's close_notify as ConnectionLost.
        assert client.reason.check(ConnectionDone) and not client.reason.check(ConnectionLost)
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_close_notify_from_the_client_is_a_clean_close(served, closeLines):
    server = yield listening(served)
    try:
        client = yield greeted(server)
        client.transport.loseConnection()  # close_notify, then the server's, then TCP
        yield client.closed
        while server.factory.limiter.total:
            yield deferLaterTick()
        assert client.reason.check(ConnectionDone)
        assert len(closeLines) == 1 and "closed (client closed)" in closeLines[0]
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_truncation_is_a_lost_connection(served, closeLines):
    """A TCP close without close_notify (an attacker cutting the stream) is not taken for the client's own close."""
    server = yield listening(served)
    try:
        client = yield greeted(server)
        client.transport.transport.loseConnection()  # the TCP transport under the client's TLS: no close_notify
        yield client.closed
        while server.factory.limiter.total:
            yield deferLaterTick()
        assert len(closeLines) == 1 and "closed (connection lost)" in closeLines[0]
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_haproxy_ssl_listener_accepts_with_echofile_tls(served):
    server = TLSServer(makeFilesFactory(served, reactor), "haproxy:" + TLS)
    yield server.start()
    try:
        assert server.port.factory.protocol is EchofileTLS
    finally:
        yield server.port.stopListening()
