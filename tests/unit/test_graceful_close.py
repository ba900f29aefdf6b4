"""
How sessions end (PROTOCOL.md rev 2, "How sessions end"): half-close, read
and discard until the client closes, abort after the grace; for the file
and the echo service alike (one mechanism, L{echofile.limits.GracefulClose}).
"""

from __future__ import annotations

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from zope.interface import directlyProvides

from echofile.echo import EchoFactory
from echofile.limits import CLOSE_GRACE_SECONDS, ConnectionLimiter, closeWithin
from echofile.shutdown import GracefulShutdown
from support import (
    PASSWORD, HalfCloseTransport, connectHalfClosing, drainTransfer, makeFilesFactory, replies,
)


def loggedIn(served, clock):
    protocol, transport = connectHalfClosing(makeFilesFactory(served, clock))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport) == [b"#Server Ready.", b"#You are logged in."]
    return protocol, transport


# -- the mechanism -----------------------------------------------------------------


def test_half_close_resumes_reading_and_aborts_after_the_grace():
    clock = Clock()
    transport = HalfCloseTransport()
    transport.pauseProducing()  # the session had stopped reading
    closing = closeWithin(transport, clock)
    assert transport.writeDisconnecting and not transport.disconnecting
    assert transport.producerState == "producing"  # input is read (and dropped), not left unread
    clock.advance(CLOSE_GRACE_SECONDS - 0.1)
    assert not transport.disconnected and closing.active()
    clock.advance(0.1)
    assert transport.disconnected and not closing.active()


def test_peer_close_closes_and_cancel_stops_the_grace():
    clock = Clock()
    transport = HalfCloseTransport()
    closing = closeWithin(transport, clock)
    closing.peerClosed()
    assert transport.disconnecting and not transport.disconnected
    closing.cancel()  # from connectionLost
    clock.advance(CLOSE_GRACE_SECONDS)
    assert not transport.disconnected and clock.getDelayedCalls() == []


def test_input_already_ended_closes_at_once():
    transport = HalfCloseTransport()
    closeWithin(transport, Clock(), inputEnded=True)
    assert transport.disconnecting and not transport.writeDisconnecting


def test_tls_sends_close_notify_instead_of_a_tcp_half_close():
    """On TLS, loseConnection is the graceful close (close_notify once flushed); a TCP FIN under it would cut TLS."""
    transport = HalfCloseTransport()
    directlyProvides(transport, ISSLTransport)
    closeWithin(transport, Clock())
    assert transport.disconnecting and not transport.writeDisconnecting


def test_transport_without_half_close_is_closed():
    transport = StringTransport()
    closeWithin(transport, Clock())
    assert transport.disconnecting


# -- the file service --------------------------------------------------------------


def test_quit_half_closes_and_drops_what_follows(served):
    clock = Clock()
    protocol, transport = loggedIn(served, clock)
    protocol.dataReceived(b"QUIT\r\nHELP\r\n")
    assert replies(transport) == [b"#Bye."]
    assert transport.writeDisconnecting and not transport.disconnecting
    protocol.writeConnectionLost()  # our FIN went out: keep reading
    assert not transport.disconnecting
    protocol.dataReceived(b"FILE notes.txt\r\nQUIT\r\n")  # read and dropped
    assert transport.producer is None and replies(transport) == []
    protocol.readConnectionLost()  # the client closed its side
    assert transport.disconnecting and not transport.disconnected
    protocol.connectionLost(None)
    clock.advance(CLOSE_GRACE_SECONDS)
    assert not transport.disconnected


def test_client_that_never_closes_is_aborted_after_the_grace(served):
    clock = Clock()
    protocol, transport = loggedIn(served, clock)
    protocol.dataReceived(b"QUIT\r\n")
    clock.advance(CLOSE_GRACE_SECONDS)
    assert transport.disconnected


def test_quit_behind_a_body_gets_the_whole_body_first(served):
    clock = Clock()
    protocol, transport = loggedIn(served, clock)
    protocol.dataReceived(b"FILE binary.bin\r\nQUIT\r\nHELP\r\n")
    assert not transport.writeDisconnecting
    drainTransfer(transport)
    data = transport.value()
    assert data.endswith(bytes(range(256)) * 4 + b"\r\n#File binary.bin sent successfully.\r\n#Bye.\r\n")
    assert transport.writeDisconnecting and not transport.disconnecting


def test_line_too_long_half_closes(served):
    clock = Clock()
    protocol, transport = connectHalfClosing(makeFilesFactory(served, clock, maxLine=16))
    replies(transport)
    protocol.dataReceived(b"x" * 40)
    assert replies(transport) == [b"!Line too long."]
    assert transport.writeDisconnecting and not transport.disconnecting
    protocol.dataReceived(b"more of it\r\nHELP\r\n")
    assert replies(transport) == []


def test_idle_timeout_half_closes(served):
    clock = Clock()
    protocol, transport = loggedIn(served, clock)
    clock.advance(300)
    assert replies(transport) == [b"!Idle timeout."]
    assert transport.writeDisconnecting and not transport.disconnecting


def test_shutdown_mid_body_with_a_pipelined_file(served):
    """The whole body and trailer, then the goodbye; the pipelined FILE never runs; then a half-close."""
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    protocol, transport = connectHalfClosing(factory)
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\nFILE binary.bin\r\nFILE notes.txt\r\n")
    transport.clear()
    stopper = GracefulShutdown([factory.sessions], clock, 10.0, installSignalHandlers=False)
    stopper.startService()
    done = stopper.stopService()
    assert not transport.writeDisconnecting
    drainTransfer(transport)
    assert transport.value() == (
        bytes(range(256)) * 4 + b"\r\n#File binary.bin sent successfully.\r\n!Server shutting down.\r\n"
    )
    assert transport.writeDisconnecting and not transport.disconnecting
    protocol.readConnectionLost()
    assert transport.disconnecting
    protocol.connectionLost(None)
    assert done.called


# -- the echo service --------------------------------------------------------------


def test_echo_shutdown_half_closes_and_stops_echoing():
    clock = Clock()
    factory = EchoFactory(clock, ConnectionLimiter(10, 10, "echo"), 300.0)
    protocol = factory.buildProtocol(None)
    transport = HalfCloseTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"pending")
    protocol.shutdown()
    assert transport.value() == b"pending"
    assert transport.writeDisconnecting and not transport.disconnecting
    protocol.writeConnectionLost()
    protocol.dataReceived(b"after the end")
    assert transport.value() == b"pending"
    protocol.readConnectionLost()
    assert transport.disconnecting
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_echo_idle_client_that_never_closes_is_aborted():
    clock = Clock()
    factory = EchoFactory(clock, ConnectionLimiter(10, 10, "echo"), 5.0)
    protocol = factory.buildProtocol(None)
    transport = HalfCloseTransport()
    protocol.makeConnection(transport)
    clock.advance(5)
    assert transport.writeDisconnecting and not transport.disconnected
    clock.advance(CLOSE_GRACE_SECONDS)
    assert transport.disconnected


# -- under the PROXY wrapper ---------------------------------------------------------


def throughProxyWrapper(transport):
    """What a haproxy: endpoint puts between the session and the socket (or the TLS layer)."""
    wrapper = HAProxyWrappingFactory(Factory.forProtocol(Protocol)).buildProtocol(None)
    wrapper.makeConnection(transport)
    return wrapper


def test_proxy_wrapper_over_tcp_half_closes_the_socket():
    transport = HalfCloseTransport()
    closeWithin(throughProxyWrapper(transport), Clock())
    assert transport.writeDisconnecting and not transport.disconnecting


def test_proxy_wrapper_over_tls_closes_tls_not_the_socket_under_it():
    transport = HalfCloseTransport()
    directlyProvides(transport, ISSLTransport)
    closeWithin(throughProxyWrapper(transport), Clock())
    assert transport.disconnecting and not transport.writeDisconnecting
