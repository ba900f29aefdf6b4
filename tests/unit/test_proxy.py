"""
Sessions behind Twisted's PROXY protocol wrapper (what ``haproxy:`` endpoints
build), on StringTransport: a connection counts against the balancer's
address until its header names the client; greeting and logs wait for the
header and use the client address in it; only trusted balancers are
believed, junk headers close the connection; health checks count as the
balancer.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone

from echofile.echo import EchoFactory
from echofile.limits import ConnectionLimiter
from echofile.proxy import HealthCheck, peerKey, whenPeerKnown
from support import PASSWORD, replies
from support import makeFilesFactory as _makeFilesFactory

BALANCER = IPv4Address("TCP", "10.0.0.2", 41000)
#: The balancer's network, trusted (--trusted-proxy 10.0.0.0/8) by the factories here.
TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]


def makeFilesFactory(*args, **kwargs):
    kwargs.setdefault("trustedProxies", TRUSTED)
    return _makeFilesFactory(*args, **kwargs)

CLIENT = "203.0.113.7"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str = CLIENT, port: int = 51000) -> bytes:
    return f"PROXY TCP4 {source} 10.0.0.1 {port} 8008\r\n".encode()


def v2(source: str = CLIENT, port: int = 51000) -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("10.0.0.1") + struct.pack("!HH", port, 8008)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def v2Local() -> bytes:
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def v2Tcp6(source: str = "2001:db8::7") -> bytes:
    body = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    body += struct.pack("!HH", 51000, 8008)
    return V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body


@pytest.fixture
def clock() -> Clock:
    return Clock()


def behindProxy(factory, balancer: IPv4Address = BALANCER):
    """Connect a session through the PROXY wrapper, as a haproxy: endpoint does on accept."""
    wrapper = HAProxyWrappingFactory(factory).buildProtocol(balancer)
    transport = StringTransport(peerAddress=balancer)
    wrapper.makeConnection(transport)
    return wrapper, transport


def test_plain_transport_fires_at_once(clock):
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 1))
    fired = []
    whenPeerKnown(transport).addCallback(fired.append)
    assert fired == [transport.getPeer()]
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_greeting_and_admission_wait_for_the_header(served, clock, header):
    factory = makeFilesFactory(served, clock, idleTimeout=30)
    wrapper, transport = behindProxy(factory)
    assert transport.value() == b""  # not greeted before the header
    assert factory.limiter.countFor(BALANCER.host) == 1  # but counted, as the balancer, until it arrives
    wrapper.dataReceived(header)
    assert replies(transport) == [b"#Server Ready."]
    assert factory.limiter.countFor(CLIENT) == 1
    assert factory.limiter.countFor(BALANCER.host) == 0
    assert wrapper.wrappedProtocol._peerKey == CLIENT
    wrapper.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\nWHO\r\n")
    assert replies(transport) == [b"#You are logged in.", b"#1 users online.", b"~guest1"]
    wrapper.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_commands_in_the_header_packet_run_after_the_greeting(served, clock):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(v2() + b"HELP\r\nQUIT\r\n")
    lines = replies(transport)
    assert lines[0] == b"#Server Ready."
    assert lines[1].startswith(b"#Commands:")
    assert lines[2] == b"#Bye."


def test_header_split_over_packets(served, clock):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    header = v1()
    wrapper.dataReceived(header[:10])
    assert transport.value() == b""
    wrapper.dataReceived(header[10:] + b"HELP\n")
    assert replies(transport)[:2] == [b"#Server Ready.", b"#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO."]
    assert factory.limiter.countFor(CLIENT) == 1


def test_ipv6_client_from_v2_header(served, clock):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(v2Tcp6())
    assert replies(transport) == [b"#Server Ready."]
    assert factory.limiter.countFor("2001:db8::7") == 1


def test_logs_name_the_client_not_the_balancer(served, clock, logged):
    """The client from the header first, marked as such, with the balancer it came through (docs/deploy.md)."""
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(v2() + b"AUTH " + PASSWORD.encode() + b"\n")
    texts = [formatEvent(e) for e in logged]
    peer = f"{CLIENT}:51000 (via PROXY from {BALANCER.host}:{BALANCER.port})"
    assert f"files: connection from {peer}" in texts
    assert f"files: {peer} logged in as guest" in texts
    # The balancer is never named as if it were the client: only after "via PROXY from".
    assert not any(BALANCER.host in text.replace(f"(via PROXY from {BALANCER.host}:", "") for text in texts)


def test_per_address_limit_uses_the_header_address(served, clock):
    factory = makeFilesFactory(served, clock, maxPerAddress=1)
    first, firstTransport = behindProxy(factory)
    first.dataReceived(v2("198.51.100.1"))
    other, otherTransport = behindProxy(factory)  # same balancer, another client: admitted
    other.dataReceived(v2("198.51.100.2"))
    again, againTransport = behindProxy(factory)  # the first client again: over its cap
    again.dataReceived(v2("198.51.100.1") + b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(firstTransport) == [b"#Server Ready."]
    assert replies(otherTransport) == [b"#Server Ready."]
    assert replies(againTransport) == [b"!Server busy, try again later."]  # and the AUTH never ran
    assert againTransport.disconnecting
    assert factory.limiter.total == 2


@pytest.mark.parametrize(
    "header", [v2Local(), b"PROXY UNKNOWN 192.0.2.1 10.0.0.1 1 2\r\n"], ids=["v2-LOCAL", "v1-UNKNOWN"]
)
def test_health_checks_count_as_the_balancer(served, clock, logged, header):
    """PROTOCOL.md rev 2: a LOCAL/UNKNOWN header counts as the balancer's address, not as a key of its own."""
    factory = makeFilesFactory(served, clock, maxPerAddress=2)
    sessions = []
    for port in (41001, 41002):
        wrapper, transport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, port))
        wrapper.dataReceived(header)
        assert replies(transport) == [b"#Server Ready."]
        assert wrapper.wrappedProtocol._peerKey == BALANCER.host
        sessions.append(wrapper)
    assert factory.limiter.countFor(BALANCER.host) == 2
    third, thirdTransport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, 41003))  # over the balancer's cap
    assert thirdTransport.disconnecting and thirdTransport.value() == b""
    third.connectionLost(Failure(ConnectionDone()))
    checks = [e for e in logged if formatEvent(e) == f"files: connection from {BALANCER.host}:41001 (a PROXY health check)"]
    assert checks and {e["log_level"] for e in checks} == {LogLevel.debug}  # one every few seconds: not at info
    for wrapper in sessions:
        wrapper.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0
    closes = [e for e in logged if formatEvent(e).startswith(f"files: {BALANCER.host}:41001 closed (client closed)")]
    assert len(closes) == 1 and closes[0]["log_level"] == LogLevel.debug  # its close line too


def test_health_check_key():
    assert peerKey(HealthCheck(IPv4Address("TCP", "10.0.0.2", 5))) == "10.0.0.2"
    assert peerKey(IPv6Address("TCP", "::1", 5)) == "::1"


def test_missing_header_times_out_at_the_login_deadline(served, clock, logged):
    """The header wait is bounded by --login-timeout (not the idle timeout) and holds the balancer's slot until then."""
    factory = makeFilesFactory(served, clock, idleTimeout=300, loginTimeout=20.0)
    wrapper, transport = behindProxy(factory)
    clock.advance(19)
    assert not transport.disconnecting
    assert factory.limiter.countFor(BALANCER.host) == 1
    clock.advance(1)
    assert transport.disconnecting  # aborted
    assert transport.value() == b""
    assert any(
        "files: no PROXY protocol header from 10.0.0.2:41000 in 20.0s (--login-timeout), closing" == formatEvent(e)
        for e in logged
    )
    wrapper.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_closed_before_the_header(served, clock):
    factory = makeFilesFactory(served, clock, idleTimeout=30)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(b"PROXY TCP4 1.2")
    session = wrapper.wrappedProtocol._protocol
    assert factory.limiter.total == 1
    wrapper.connectionLost(Failure(ConnectionDone()))
    assert session._connected is False
    assert factory.limiter.total == 0
    assert clock.getDelayedCalls() == []  # the header timer is gone
    assert transport.value() == b""


def test_garbage_instead_of_a_header_is_dropped(served, clock):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(b"AUTH guess-my-password\r\n")
    assert transport.disconnecting
    assert transport.value() == b""
    wrapper.connectionLost(Failure(ConnectionDone()))  # its slot is held until it is really closed
    assert factory.limiter.total == 0


def echoFactory(clock: Clock, maxPerAddress: int = 50, **kwargs) -> EchoFactory:
    kwargs.setdefault("trustedProxies", TRUSTED)
    return EchoFactory(clock, ConnectionLimiter(100, maxPerAddress, "echo"), 30, **kwargs)


def test_echo_admits_by_the_header_address(clock):
    factory = echoFactory(clock, maxPerAddress=1)
    wrapper, transport = behindProxy(factory)
    assert factory.limiter.countFor(BALANCER.host) == 1  # counted as the balancer until the header
    wrapper.dataReceived(v1() + b"ping")
    assert transport.value() == b"ping"
    assert factory.limiter.countFor(CLIENT) == 1
    assert factory.limiter.countFor(BALANCER.host) == 0
    refused, refusedTransport = behindProxy(factory)
    refused.dataReceived(v1(port=51001) + b"must not echo")
    assert refusedTransport.value() == b""  # over the cap: closed, nothing echoed
    assert refusedTransport.disconnecting
    wrapper.connectionLost(Failure(ConnectionDone()))
    refused.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_echo_health_check(clock):
    factory = echoFactory(clock, maxPerAddress=2)
    for port in (1, 2):
        wrapper, transport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, port))
        wrapper.dataReceived(v2Local())
        assert not transport.disconnecting
    assert factory.limiter.countFor(BALANCER.host) == 2  # counted as the balancer
    wrapper, transport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, 3))
    assert transport.disconnecting and transport.value() == b""
    assert factory.limiter.total == 2


def test_bare_v1_unknown_is_refused_by_twisted(served, clock):
    """
    A finding, pinned: Twisted's v1 parser wants something after ``UNKNOWN``
    and drops a bare ``PROXY UNKNOWN`` line (which the spec allows).  HAProxy's
    own checks use v2 LOCAL with ``send-proxy-v2``, which is what we document.
    """
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(b"PROXY UNKNOWN\r\n")
    assert transport.disconnecting
    assert transport.value() == b""


# -- connections waiting for their header count (PROTOCOL.md rev 2, "How sessions end") ----------


def test_waiting_connections_count_against_the_balancers_cap(served, clock):
    """Over the per-address cap while waiting for a header: closed at once, without a word."""
    factory = makeFilesFactory(served, clock, maxPerAddress=2)
    waiting = [behindProxy(factory, IPv4Address("TCP", BALANCER.host, port)) for port in (1, 2)]
    assert factory.limiter.countFor(BALANCER.host) == 2
    refused, refusedTransport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, 3))
    assert refusedTransport.disconnecting
    refused.dataReceived(v1() + b"HELP\r\n")  # already on its way: never read
    assert refusedTransport.value() == b""
    refused.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 2
    # Once a header moves one to its client, the balancer has room again.
    waiting[0][0].dataReceived(v2("198.51.100.1"))
    assert replies(waiting[0][1]) == [b"#Server Ready."]
    assert factory.limiter.countFor(BALANCER.host) == 1
    again, againTransport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, 4))
    assert not againTransport.disconnecting


def test_waiting_connections_count_against_the_total_cap(served, clock):
    factory = makeFilesFactory(served, clock, maxConnections=2)
    for port in (1, 2):
        behindProxy(factory, IPv4Address("TCP", "10.0.0.%d" % port, 1))
    refused, refusedTransport = behindProxy(factory, IPv4Address("TCP", "10.0.0.3", 1))
    assert refusedTransport.disconnecting and refusedTransport.value() == b""


def test_the_header_address_is_checked_against_its_own_cap(served, clock):
    """A client at its cap behind the balancer gets the busy reply once its header is in, and gives the slot back."""
    factory = makeFilesFactory(served, clock, maxPerAddress=1)
    first, _ = behindProxy(factory)
    first.dataReceived(v2("198.51.100.1"))
    second, secondTransport = behindProxy(factory)
    second.dataReceived(v2("198.51.100.1"))
    assert replies(secondTransport) == [b"!Server busy, try again later."]
    assert (factory.limiter.countFor("198.51.100.1"), factory.limiter.countFor(BALANCER.host)) == (1, 0)
    second.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 1


# -- only trusted balancers are believed ----------------------------------------------------------

FORGED = v1("198.51.100.66") + b"AUTH " + PASSWORD.encode() + b"\r\n"


def untrustedEvents(logged: list[dict]) -> list[dict]:
    return [e for e in logged if "is not a trusted proxy" in formatEvent(e)]


@pytest.mark.parametrize("early", [True, False], ids=["header-with-the-connection", "header-later"])
def test_untrusted_peer_is_closed_without_a_greeting(served, clock, logged, early):
    """A client on a haproxy: port that forges the header itself: closed, never admitted under the forged address."""
    factory = makeFilesFactory(served, clock, trustedProxies=[ipaddress.ip_network("10.9.0.0/16")])
    wrapper, transport = behindProxy(factory, IPv4Address("TCP", "192.0.2.66", 5000))
    assert transport.disconnecting
    wrapper.dataReceived(FORGED)
    if not early:
        wrapper.dataReceived(v1())
    assert transport.value() == b""
    assert factory.limiter.total == 0
    assert factory.limiter.countFor("198.51.100.66") == 0
    events = untrustedEvents(logged)
    assert [formatEvent(e) for e in events] == [
        "files: 192.0.2.66:5000 is not a trusted proxy (--trusted-proxy): closed without reading its PROXY header"
    ]
    assert events[0]["log_level"] == LogLevel.info
    assert not any("198.51.100.66" in formatEvent(e) for e in logged)
    wrapper.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_untrusted_peers_reconnecting_are_logged_within_the_refusal_budget(served, clock, logged):
    """
    Anyone who can reach a haproxy: port is closed at accept for the price
    of a connect(); one line each let one client write about 400 KB/s of
    log (2700 connections/s on loopback).  They share the service's budget
    for refusals (L{echofile.limits.REFUSAL_LOG_LIMIT} per window, then a count).
    """
    from echofile.limits import REFUSAL_LOG_LIMIT

    factory = makeFilesFactory(served, clock, trustedProxies=[ipaddress.ip_network("10.9.0.0/16")])
    for port in range(5000, 5100):
        wrapper, transport = behindProxy(factory, IPv4Address("TCP", "192.0.2.66", port))
        assert transport.disconnecting
        wrapper.connectionLost(Failure(ConnectionDone()))
    assert len(untrustedEvents(logged)) == REFUSAL_LOG_LIMIT
    assert factory.limiter.total == 0


def test_echo_untrusted_peer_is_closed(clock, logged):
    factory = echoFactory(clock, trustedProxies=[])
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(v1() + b"ping")
    assert transport.disconnecting and transport.value() == b""
    assert factory.limiter.total == 0
    assert len(untrustedEvents(logged)) == 1


@pytest.mark.parametrize(
    "balancer, trusted",
    [
        (IPv4Address("TCP", "127.0.0.1", 1), True),
        (IPv4Address("TCP", "127.3.4.5", 1), True),
        (IPv6Address("TCP", "::1", 1), True),
        (IPv6Address("TCP", "::ffff:127.0.0.1", 1), True),  # an IPv4 balancer on a dual-stack listener
        (IPv4Address("TCP", "10.0.0.2", 1), False),
        (IPv6Address("TCP", "::ffff:10.0.0.2", 1), False),
        (IPv6Address("TCP", "2001:db8::2", 1), False),
    ],
)
def test_default_trust_is_loopback_only(served, clock, balancer, trusted):
    factory = _makeFilesFactory(served, clock)  # the factory's own default, as --trusted-proxy's
    wrapper, transport = behindProxy(factory, balancer)
    wrapper.dataReceived(v1())
    assert replies(transport) == ([b"#Server Ready."] if trusted else [])
    assert transport.disconnecting is not trusted


# -- junk in a trusted balancer's header ----------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 not-an-ip 10.0.0.1 51000 8008\r\n",
        b"PROXY TCP4 \x1b[31m\x1b]0;owned\x07 10.0.0.1 51000 8008\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 8008\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 -1 8008\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 port 8008\r\n",  # ValueError out of Twisted's parser
        b"PROXY TCP4 \xff\xfe\x1b 10.0.0.1 1 8008\r\n",  # not UTF-8: UnicodeDecodeError out of Twisted's parser
        b"PROXY TCP4 2001:db8::7 10.0.0.1 1 8008\r\n",  # an IPv6 address in a TCP4 header
        b"PROXY TCP6 203.0.113.7 ::1 1 8008\r\n",
        b"PROXY TCP6 fe80::1%\x1b[2J ::1 1 8008\r\n",  # a scope is text of any kind to ipaddress
        b"PROXY TCP4 010.0.0.1 10.0.0.1 1 8008\r\n",
        b"\x1b[2J not a header at all\r\n",
    ],
    ids=[
        "not-an-ip", "escapes", "port-too-big", "negative-port", "port-not-a-number", "not-utf8",
        "v6-in-tcp4", "v4-in-tcp6", "scope-with-escapes", "leading-zero", "no-header",
    ],
)
def test_junk_headers_close_the_connection(served, clock, logged, header):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(header + b"AUTH " + PASSWORD.encode() + b"\r\n")  # never raises
    assert transport.disconnecting
    assert transport.value() == b""
    texts = [formatEvent(e) for e in logged]
    refused = [t for t in texts if t.startswith("files: invalid PROXY protocol header from 10.0.0.2:41000 ")]
    assert len(refused) == 1, texts
    assert not any("\x1b" in t or "\x07" in t for t in texts)
    assert not any("connection from" in t for t in texts)
    wrapper.dataReceived(b"more\r\n")  # what a closing connection still delivers is dropped
    assert transport.value() == b""
    wrapper.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


@pytest.mark.parametrize(
    "source, key", [("::ffff:203.0.113.7", "203.0.113.7"), ("2001:db8:0:0:0:0:0:7", "2001:db8::7")]
)
def test_header_addresses_are_normalised(served, clock, source, key):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(f"PROXY TCP6 {source} ::1 5000 8008\r\n".encode())
    assert replies(transport) == [b"#Server Ready."]
    assert wrapper.wrappedProtocol._peerKey == key
    assert factory.limiter.countFor(key) == 1


def test_v2_unix_source_counts_as_the_balancer(served, clock):
    body = b"/tmp/client.sock".ljust(108, b"\0") + b"/tmp/server.sock".ljust(108, b"\0")
    header = V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", len(body)) + body
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(header)
    assert replies(transport) == [b"#Server Ready."]
    assert factory.limiter.countFor(BALANCER.host) == 1


class SocketStringTransport(StringTransport):
    """A StringTransport with a socket, as tcp.Server has (which the PROXY wrapper hands on as its own)."""

    def __init__(self, sock: socket.socket, peerAddress) -> None:
        super().__init__(peerAddress=peerAddress)
        self.socket = sock


def test_the_balancer_is_named_by_its_socket_not_by_the_parsed_header(served, clock, logged):
    """Once a junk header is parsed, the wrapper's getPeer() is that junk: logs must name the socket's peer."""
    factory = makeFilesFactory(served, clock)
    with socket.socket() as sock:
        wrapper = HAProxyWrappingFactory(factory).buildProtocol(BALANCER)
        transport = SocketStringTransport(sock, BALANCER)
        wrapper.makeConnection(transport)
        wrapper.dataReceived(b"PROXY TCP4 evil.example 10.0.0.1 1 8008\r\n")
    assert transport.disconnecting and transport.value() == b""
    texts = [formatEvent(e) for e in logged]
    assert any(t.startswith("files: invalid PROXY protocol header from 10.0.0.2:41000 ") for t in texts), texts
    assert not any("from evil.example" in t for t in texts)


@pytest.mark.parametrize(
    "sent, shown",
    [
        (b"PROXY TCP4 not-an-ip 10.0.0.1 1 8008\r\nAUTH secret-pw\r\n", "b'PROXY TCP4 not-an-ip 10.0.0.1 1 8008'"),
        (b"AUTH secret-pw\r\n", "16 bytes that are not a PROXY protocol header, not shown"),
    ],
)
def test_bad_header_log_never_shows_what_follows_it(served, clock, logged, sent, shown):
    """A client that bypassed the balancer may type AUTH first: only a header itself is ever logged."""
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(sent)
    assert transport.disconnecting
    texts = [formatEvent(e) for e in logged]
    assert not any("secret-pw" in t for t in texts)
    assert any(t.endswith(f": {shown}, closing") for t in texts), texts
