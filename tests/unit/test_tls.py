"""
The warning logged when AUTH succeeds over plain TCP from another host, and
the loopback test behind it.
"""

from __future__ import annotations


import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from zope.interface import directlyProvides

from echofile.tls import TLSHandshake, cleartextOverNetwork, isLoopback
from support import PASSWORD, connect, makeFilesFactory, replies


def warnings(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn and "clear text" in formatEvent(e)]


def logIn(protocol, transport) -> None:
    replies(transport)
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport) == [b"#You are logged in."]


@pytest.mark.parametrize(
    "address, loopback",
    [
        (IPv4Address("TCP", "127.0.0.1", 1), True),
        (IPv4Address("TCP", "127.8.9.10", 1), True),
        (IPv6Address("TCP", "::1", 1), True),
        (IPv6Address("TCP", "::ffff:127.0.0.1", 1), True),
        (UNIXAddress(b"/run/echofile.sock"), True),
        (IPv4Address("TCP", "192.0.2.1", 1), False),
        (IPv6Address("TCP", "2001:db8::1", 1), False),
        (IPv6Address("TCP", "fe80::1%eth0", 1), False),
        (IPv6Address("TCP", "::ffff:192.0.2.1", 1), False),
    ],
)
def test_is_loopback(address, loopback):
    assert isLoopback(address) is loopback


def test_tls_transport_is_not_cleartext():
    peer = IPv4Address("TCP", "192.0.2.1", 1)
    transport = StringTransport(peerAddress=peer)
    assert cleartextOverNetwork(transport, peer)
    directlyProvides(transport, ISSLTransport)
    assert not cleartextOverNetwork(transport, peer)


def test_warning_for_plain_tcp_from_another_host(served, logged):
    protocol, transport = connect(makeFilesFactory(served, Clock()), host="192.0.2.1")
    logIn(protocol, transport)
    assert warnings(logged) == [
        "files: guest logged in from 192.0.2.1 over plain TCP: the password crossed the network in clear text; "
        "serve --files on a TLS endpoint (ssl:/tls:, see docs/deploy.md)"
    ]


def test_no_warning_on_loopback(served, logged):
    protocol, transport = connect(makeFilesFactory(served, Clock()), host="127.0.0.1")
    logIn(protocol, transport)
    assert warnings(logged) == []


def test_no_warning_over_tls(served, logged):
    address = IPv4Address("TCP", "192.0.2.1", 40000)
    factory = makeFilesFactory(served, Clock())
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    directlyProvides(transport, ISSLTransport)
    protocol.makeConnection(transport)
    protocol.handshakeCompleted()
    logIn(protocol, transport)
    assert warnings(logged) == []


def test_no_warning_for_failed_login(served, logged):
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock), host="192.0.2.1")
    protocol.dataReceived(b"AUTH wrong\r\n")
    clock.advance(1)
    assert warnings(logged) == []


@pytest.mark.parametrize("client, warned", [("192.0.2.9", True), ("127.0.0.1", False)])
def test_behind_a_balancer_the_header_address_decides(served, logged, client, warned):
    balancer = IPv4Address("TCP", "127.0.0.1", 41000)  # a local haproxy
    wrapper = HAProxyWrappingFactory(makeFilesFactory(served, Clock())).buildProtocol(balancer)
    transport = StringTransport(peerAddress=balancer)
    wrapper.makeConnection(transport)
    wrapper.dataReceived(f"PROXY TCP4 {client} 127.0.0.1 5000 8008\r\n".encode())
    logIn(wrapper.wrappedProtocol, transport)
    assert bool(warnings(logged)) is warned


def tlsSession(served, clock: Clock, idleTimeout: float = 30):
    """A session on a transport that says it is TLS, before the handshake is done."""
    address = IPv4Address("TCP", "192.0.2.1", 40000)
    factory = makeFilesFactory(served, clock, idleTimeout=idleTimeout)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    directlyProvides(transport, ISSLTransport)
    protocol.makeConnection(transport)
    return factory, protocol, transport


def test_greeting_waits_for_the_handshake(served):
    """Written before the handshake, the greeting would make Twisted's TLS pause the session, which stops reading."""
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock)
    assert transport.value() == b""
    assert factory.limiter.total == 0
    assert transport.producer is None
    protocol.handshakeCompleted()
    assert replies(transport) == [b"#Server Ready."]
    assert factory.limiter.total == 1
    assert clock.getDelayedCalls() != []  # now the idle timeout runs


def test_stalled_handshake_is_aborted(served, logged):
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock, idleTimeout=30)
    clock.advance(29.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    assert transport.value() == b""
    assert any("TLS handshake with" in formatEvent(e) for e in logged)


def test_lost_before_the_handshake(served):
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock)
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []
    assert factory.limiter.total == 0


def test_plain_transport_is_ready_at_once():
    clock = Clock()
    handshake = TLSHandshake(StringTransport(), clock, 5)
    assert handshake.done.called
    assert clock.getDelayedCalls() == []
