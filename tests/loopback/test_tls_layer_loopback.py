"""
echofile.tlslayer over real sockets: an C{ssl:} listener as twistd makes it
(L{fasterTLS}) accepts with L{EchofileTLS}, and what a client sees is what
Twisted's own TLS layer gives it: the greeting after the handshake, a FILE
body byte for byte, C{close_notify} when the server ends the session, and a
TCP close without one reported as a lost connection, not a clean close.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport, ITCPTransport
from twisted.internet.endpoints import serverFromString
from twisted.logger import formatEvent, globalLogPublisher

from echofile.tlslayer import EchofileTLS, fasterTLS
from loopbackhelpers import SERVER_PEM, Collector, Server, TLSServer, deferLaterTick
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


class RawTLSClient(Collector):
    """
    A TLS client that puts its records on the wire itself (pyOpenSSL with memory BIOs over plain TCP),
    so that commands and its close_notify leave in one write: what a client gives the server in one read.
    C{data} is the plaintext received; C{closeNotify} tells whether the server's close_notify came.
    """

    closeNotify = False

    def connectionMade(self) -> None:
        from OpenSSL import SSL

        self.handshakeDone: Deferred[None] = Deferred()
        self.tls = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        self.tls.set_connect_state()
        self._step()

    def _step(self) -> None:
        from OpenSSL import SSL

        try:
            self.tls.do_handshake()
        except SSL.WantReadError:
            pass
        else:
            if not self.handshakeDone.called:
                self.handshakeDone.callback(None)
        self._send()

    def _send(self) -> None:
        from OpenSSL import SSL

        try:
            self.transport.write(self.tls.bio_read(1 << 20))
        except SSL.WantReadError:
            pass

    def sendAndClose(self, plaintext: bytes) -> None:
        """C{plaintext} and our close_notify, in one write."""
        from OpenSSL import SSL

        self.tls.sendall(plaintext)
        try:
            self.tls.shutdown()
        except SSL.Error:
            pass
        self._send()

    def dataReceived(self, data: bytes) -> None:
        from OpenSSL import SSL

        self.tls.bio_write(data)
        self._step()
        while True:
            try:
                plain = self.tls.recv(1 << 16)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closeNotify = True
                break
            Collector.dataReceived(self, plain)


@inlineCallbacks
def rawTLSClient(server):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    client = RawTLSClient()
    server.clients.append(client)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port), client)
    return client


def closedWithin(client, seconds: float = 10.0):
    """The client's close, or a failure if the server still holds the connection after C{seconds}."""
    return client.closed.addTimeout(seconds, reactor)


HELP_REPLY = b"#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO.\r\n"


@pytest_twisted.inlineCallbacks
def test_commands_then_close_notify_answered_then_closed(served):
    """
    Commands and close_notify in one flight (TLS 1.3): every reply, then the server's close_notify, then
    the close.  Twisted dropped the replies still aggregated when it answered the close_notify.
    """
    server = yield listening(served)
    try:
        client = yield rawTLSClient(server)
        yield client.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
        del client.data[:]
        client.sendAndClose(b"HELP\n" * 10)
        yield closedWithin(client)
        assert bytes(client.data) == HELP_REPLY * 10
        assert client.closeNotify
    finally:
        yield server.stop()  # waits for the server to count the connection gone


@pytest_twisted.inlineCallbacks
def test_close_notify_after_more_replies_than_the_buffer_still_closes(served):
    """
    2,000 HELPs and close_notify in one flight: replies in order (as many as were run before the buffer
    filled and paused the session), the server's close_notify, and the close, its slot given back.  With
    Twisted's TLS layer the full buffer kept the connection open, not reading, until the idle timeout.
    """
    server = yield listening(served)
    try:
        client = yield rawTLSClient(server)
        yield client.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
        del client.data[:]
        client.sendAndClose(b"HELP\n" * 2000)
        yield closedWithin(client)
        replies = len(client.data) // len(HELP_REPLY)
        assert replies >= 1 and bytes(client.data) == HELP_REPLY * replies
        assert client.closeNotify
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_echo_then_close_notify_all_echoed_then_closed():
    """The echo service over TLS: the bytes that came with the client's close_notify are echoed too, then the close."""
    from echofile.echo import EchoFactory
    from echofile.limits import ConnectionLimiter

    limiter = ConnectionLimiter(1000, 50, "echo", clock=reactor)
    server = Server(EchoFactory(reactor, limiter, idleTimeout=300.0), TLS)
    server.port = yield fasterTLS(serverFromString(reactor, TLS)).listen(server.factory)
    try:
        client = yield rawTLSClient(server)
        yield client.handshakeDone
        body = os.urandom(1024 * 1024)
        client.sendAndClose(body)
        yield closedWithin(client)
        assert client.count == len(body) and client.hash.digest() == hashlib.sha256(body).digest()
        assert client.closeNotify
    finally:
        yield server.stop()
