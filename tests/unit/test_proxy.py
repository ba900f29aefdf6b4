"""
Sessions behind Twisted's PROXY protocol wrapper (what ``haproxy:`` endpoints
build), on StringTransport: admission, logs and greeting wait for the header
and use the client address in it; health checks count against no address.
"""

from __future__ import annotations

import socket
import struct

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone

from echofile.echo import EchoFactory
from echofile.limits import ConnectionLimiter
from echofile.proxy import HealthCheck, peerKey, whenPeerKnown
from support import PASSWORD, makeFilesFactory, replies

BALANCER = IPv4Address("TCP", "10.0.0.2", 41000)
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
    whenPeerKnown(transport, clock, 5).addCallback(fired.append)
    assert fired == [transport.getPeer()]
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_greeting_and_admission_wait_for_the_header(served, clock, header):
    factory = makeFilesFactory(served, clock, idleTimeout=30)
    wrapper, transport = behindProxy(factory)
    assert transport.value() == b""  # not greeted before the header
    assert factory.limiter.total == 0
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
    assert replies(transport)[:2] == [b"#Server Ready.", b"#Commands: AUTH, FILE, HELP, LIST, MSG, QUIT, SAY, USER, WHO."]
    assert factory.limiter.countFor(CLIENT) == 1


def test_ipv6_client_from_v2_header(served, clock):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(v2Tcp6())
    assert replies(transport) == [b"#Server Ready."]
    assert factory.limiter.countFor("2001:db8::7") == 1


def test_logs_name_the_client_not_the_balancer(served, clock, logged):
    factory = makeFilesFactory(served, clock)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(v2() + b"AUTH " + PASSWORD.encode() + b"\n")
    texts = [formatEvent(e) for e in logged]
    assert f"files: connection from {CLIENT}" in texts
    assert f"files: {CLIENT} logged in as guest" in texts
    assert not any(BALANCER.host in text for text in texts)


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
def test_health_checks_count_against_no_address(served, clock, header):
    factory = makeFilesFactory(served, clock, maxPerAddress=1)
    sessions = []
    for port in (41001, 41002, 41003):  # more checks at once than --max-per-ip
        wrapper, transport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, port))
        wrapper.dataReceived(header)
        assert replies(transport) == [b"#Server Ready."]
        sessions.append(wrapper)
    assert factory.limiter.countFor(BALANCER.host) == 0
    assert sessions[0].wrappedProtocol._peerKey == f"health-check from {BALANCER.host}:41001"
    for wrapper in sessions:
        wrapper.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_health_check_key():
    assert peerKey(HealthCheck(IPv4Address("TCP", "10.0.0.2", 5))) == "health-check from 10.0.0.2:5"
    assert peerKey(IPv6Address("TCP", "::1", 5)) == "::1"


def test_missing_header_times_out(served, clock, logged):
    factory = makeFilesFactory(served, clock, idleTimeout=30)
    wrapper, transport = behindProxy(factory)
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting  # aborted
    assert transport.value() == b""
    assert any("no PROXY protocol header" in formatEvent(e) for e in logged)


def test_closed_before_the_header(served, clock):
    factory = makeFilesFactory(served, clock, idleTimeout=30)
    wrapper, transport = behindProxy(factory)
    wrapper.dataReceived(b"PROXY TCP4 1.2")
    session = wrapper.wrappedProtocol._protocol
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
    assert factory.limiter.total == 0


def echoFactory(clock: Clock, maxPerAddress: int = 50) -> EchoFactory:
    return EchoFactory(clock, ConnectionLimiter(100, maxPerAddress, "echo"), 30)


def test_echo_admits_by_the_header_address(clock):
    factory = echoFactory(clock, maxPerAddress=1)
    wrapper, transport = behindProxy(factory)
    assert factory.limiter.total == 0
    wrapper.dataReceived(v1() + b"ping")
    assert transport.value() == b"ping"
    assert factory.limiter.countFor(CLIENT) == 1
    refused, refusedTransport = behindProxy(factory)
    refused.dataReceived(v1(port=51001) + b"must not echo")
    assert refusedTransport.value() == b""  # over the cap: closed, nothing echoed
    assert refusedTransport.disconnecting
    wrapper.connectionLost(Failure(ConnectionDone()))
    refused.connectionLost(Failure(ConnectionDone()))
    assert factory.limiter.total == 0


def test_echo_health_check(clock):
    factory = echoFactory(clock, maxPerAddress=1)
    for port in (1, 2):
        wrapper, transport = behindProxy(factory, IPv4Address("TCP", BALANCER.host, port))
        wrapper.dataReceived(v2Local())
        assert not transport.disconnecting
    assert factory.limiter.countFor(BALANCER.host) == 0
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
