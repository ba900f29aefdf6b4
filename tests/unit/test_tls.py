"""
The warning logged when AUTH succeeds over plain TCP from another host, and
the loopback test behind it; sessions waiting for their TLS handshake:
counted from the start, closed silently over a cap or at the login deadline.
"""

from __future__ import annotations


import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.error import ConnectionDone
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from zope.interface import directlyProvides

from echofile.echo import EchoFactory
from echofile.limits import ConnectionLimiter
from echofile.tls import awaitsHandshake, cleartextOverNetwork, isLoopback, resumeSessions
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
        "files: guest logged in from 192.0.2.1:40000 over plain TCP: the password crossed the network in clear text; "
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


def tlsTransport(host: str = "192.0.2.1", port: int = 40000) -> StringTransport:
    """A transport that says it is TLS, before the handshake is done."""
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
    directlyProvides(transport, ISSLTransport)
    return transport


def tlsSession(served, clock: Clock, factory=None, port: int = 40000, host: str = "192.0.2.1", **kwargs):
    """A file session on a TLS transport, before the handshake is done."""
    factory = factory or makeFilesFactory(served, clock, **kwargs)
    transport = tlsTransport(host, port)
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    return factory, protocol, transport


def test_tls_peer_is_logged_as_itself_not_as_proxied(served, logged):
    """Over TLS the session starts after the handshake, through the same wait as a PROXY header: no "via PROXY"."""
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock)
    protocol.handshakeCompleted()
    assert [formatEvent(e) for e in logged if "connection from" in e.get("log_format", "")] == [
        "files: connection from 192.0.2.1:40000"
    ]


def test_greeting_waits_for_the_handshake(served):
    """Written before the handshake, the greeting would make Twisted's TLS pause the session, which stops reading."""
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock, idleTimeout=30)
    assert transport.value() == b""
    assert factory.limiter.countFor("192.0.2.1") == 1  # counted from the start (PROTOCOL.md rev 2)
    assert transport.producer is None
    protocol.handshakeCompleted()
    assert replies(transport) == [b"#Server Ready."]
    assert factory.limiter.total == 1
    assert clock.getDelayedCalls() != []  # now the idle timeout runs


def test_stalled_handshake_is_aborted_at_the_login_deadline(served, logged):
    """--login-timeout bounds the handshake, however long the idle timeout."""
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock, idleTimeout=300, loginTimeout=20.0)
    clock.advance(19.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    assert transport.value() == b""
    assert "files: TLS handshake with 192.0.2.1:40000 not done in 20.0s (--login-timeout), closing" in [
        formatEvent(e) for e in logged
    ]
    protocol.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_handshakes_in_progress_are_capped_per_address(served, logged):
    """Over --max-per-ip while handshaking: closed at once, nothing said (it could only be said in clear text)."""
    clock = Clock()
    factory = makeFilesFactory(served, clock, maxPerAddress=3)
    pending = [tlsSession(served, clock, factory, port=port) for port in range(1, 4)]
    _, refused, refusedTransport = tlsSession(served, clock, factory, port=4)
    assert refusedTransport.disconnecting and refusedTransport.value() == b""
    assert factory.limiter.countFor("192.0.2.1") == 3
    refused.connectionLost(Failure(ConnectionDone()))
    # Another address is not affected, and a handshake that completes is greeted.
    _, other, otherTransport = tlsSession(served, clock, factory, host="192.0.2.2")
    other.handshakeCompleted()
    assert replies(otherTransport) == [b"#Server Ready."]
    _, protocol, transport = pending[0]
    protocol.handshakeCompleted()
    assert replies(transport) == [b"#Server Ready."]
    for _, protocol, _ in pending:
        protocol.connectionLost(Failure(ConnectionDone()))
    other.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_handshakes_in_progress_count_against_the_total(served):
    clock = Clock()
    factory = makeFilesFactory(served, clock, maxConnections=2)
    for port in (1, 2):
        tlsSession(served, clock, factory, port=port)
    _, _, refusedTransport = tlsSession(served, clock, factory, port=3)
    assert refusedTransport.disconnecting and refusedTransport.value() == b""


def test_lost_before_the_handshake(served):
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock)
    assert factory.limiter.total == 1
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []
    assert factory.limiter.total == 0


def test_login_deadline_counts_from_the_connection(served):
    """One deadline: the time the handshake took is not given again after the greeting."""
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock, loginTimeout=20.0)
    clock.advance(15)
    protocol.handshakeCompleted()
    assert replies(transport) == [b"#Server Ready."]
    clock.advance(5)
    assert replies(transport) == [b"!Login timeout."]


def test_shutdown_while_handshaking_says_nothing(served):
    clock = Clock()
    factory, protocol, transport = tlsSession(served, clock)
    protocol.shutdown()
    assert transport.disconnecting and transport.value() == b""


def test_plain_transport_is_ready_at_once():
    assert not awaitsHandshake(StringTransport())
    assert awaitsHandshake(tlsTransport())


def test_echo_handshakes_are_counted_and_bounded(logged):
    clock = Clock()
    factory = EchoFactory(clock, ConnectionLimiter(10, 2, "echo"), 300.0, readyTimeout=20.0)
    sessions = []
    for port in (1, 2, 3):
        transport = tlsTransport(port=port)
        protocol = factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        sessions.append((protocol, transport))
    assert factory.limiter.countFor("192.0.2.1") == 2
    assert sessions[2][1].disconnecting  # over the cap: closed at once
    (done, doneTransport), (stalled, stalledTransport) = sessions[:2]
    done.handshakeCompleted()
    done.dataReceived(b"ping")
    assert doneTransport.value() == b"ping"
    clock.advance(20)
    assert stalledTransport.disconnecting and stalledTransport.value() == b""
    assert not doneTransport.disconnecting
    assert "echo: TLS handshake with 192.0.2.1:2 not done in 20.0s (--login-timeout), closing" in [
        formatEvent(e) for e in logged
    ]
    for protocol, _ in sessions:
        protocol.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def _serverPem() -> str:
    import os
    import twisted.test

    return os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


@pytest.mark.parametrize("prefix", ["ssl:", "haproxy:ssl:"])
def test_ssl_endpoints_get_a_server_session_cache(prefix):
    """Twisted's ssl: defaults have OpenSSL's session cache off: every reconnect was a full handshake."""
    from OpenSSL.SSL import SESS_CACHE_OFF, SESS_CACHE_SERVER
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    from echofile.twistedinternals import serverTLSOptions

    endpoint = serverFromString(MemoryReactor(), f"{prefix}0:privateKey={_serverPem()}")
    context = serverTLSOptions(endpoint).getContext()
    assert context.get_session_cache_mode() == SESS_CACHE_OFF  # what Twisted does
    assert resumeSessions(endpoint) is True
    assert context.get_session_cache_mode() == SESS_CACHE_SERVER


def test_other_endpoints_are_left_alone():
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    assert resumeSessions(serverFromString(MemoryReactor(), "tcp:0")) is False
    assert resumeSessions(serverFromString(MemoryReactor(), "haproxy:tcp:0")) is False


def test_make_service_turns_resumption_on_for_its_ssl_endpoints(tmp_path):
    """Through twistd's path (makeService): each ssl: listener's context caches sessions."""
    from OpenSSL.SSL import SESS_CACHE_SERVER
    from twisted.internet.testing import MemoryReactorClock

    from echofile.tap import Options, makeService
    from echofile.twistedinternals import serverTLSOptions

    config = Options()
    config.parseOptions(["--root", str(tmp_path), "--files", f"ssl:0:privateKey={_serverPem()}",
                         "--echo", f"ssl:0:privateKey={_serverPem()}"])
    top = makeService(config, reactor=MemoryReactorClock(), environ={"ECHOFILE_PASSWORD": "x"})
    modes = [serverTLSOptions(child.endpoint).getContext().get_session_cache_mode()
             for child in top if hasattr(child, "endpoint")]
    assert modes == [SESS_CACHE_SERVER, SESS_CACHE_SERVER]
