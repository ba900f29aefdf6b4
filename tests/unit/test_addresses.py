"""
One name per client (echofile.addresses): IPv4-mapped addresses normalised
for caps, lock-outs, exemptions and trust; UNIX-socket peers keyed by uid.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent

from echofile.addresses import (
    UNIX_FALLBACK_KEY, HealthCheck, inNetworks, isValidClient, normalizeKey, parseNetwork, peerKey, peerUid, socketKey,
)
from echofile.lockout import LoginPenalties, parseExempt
from support import PASSWORD, makeFilesFactory, replies


@pytest.mark.parametrize(
    "address, key",
    [
        (IPv4Address("TCP", "127.0.0.1", 1), "127.0.0.1"),
        (IPv6Address("TCP", "::ffff:7f00:1", 1), "127.0.0.1"),  # how a dual-stack tcp6: listener sees IPv4
        (IPv6Address("TCP", "::ffff:127.0.0.1", 1), "127.0.0.1"),
        (IPv6Address("TCP", "::FFFF:192.0.2.1", 1), "192.0.2.1"),
        (IPv6Address("TCP", "2001:db8:0:0:0:0:0:7", 1), "2001:db8::7"),
        (IPv6Address("TCP", "::1", 1), "::1"),
        (IPv6Address("TCP", "fe80::1%eth0", 1), "fe80::1%eth0"),
        (HealthCheck(IPv6Address("TCP", "::ffff:10.0.0.2", 9)), "10.0.0.2"),
        (UNIXAddress(b"/run/echofile.sock"), UNIX_FALLBACK_KEY),
    ],
)
def test_peer_key(address, key):
    assert peerKey(address) == key


def test_normalize_key_leaves_other_keys_alone():
    assert normalizeKey("::ffff:10.1.2.3") == "10.1.2.3"
    assert normalizeKey("uid:1000") == "uid:1000"


@pytest.mark.parametrize(
    "value, network",
    [
        ("127.0.0.0/8", "127.0.0.0/8"),
        ("::ffff:127.0.0.0/104", "127.0.0.0/8"),
        ("::ffff:10.0.0.1", "10.0.0.1/32"),
        ("::1", "::1/128"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("::/0", "::/0"),
    ],
)
def test_parse_network_normalises_mapped_networks(value, network):
    assert parseNetwork(value) == ipaddress.ip_network(network)


def test_in_networks():
    loopback = [parseNetwork("127.0.0.0/8")]
    assert inNetworks("::ffff:127.0.0.1", loopback)
    assert inNetworks("127.9.9.9", loopback)
    assert not inNetworks("::1", loopback)
    assert not inNetworks("uid:0", loopback)
    assert not inNetworks("not-an-ip", loopback)


@pytest.mark.parametrize(
    "address, valid",
    [
        (IPv4Address("TCP", "203.0.113.7", 0), True),
        (IPv4Address("TCP", "203.0.113.7", 65535), True),
        (IPv6Address("TCP", "2001:db8::7", 1), True),
        (IPv6Address("TCP", "::ffff:203.0.113.7", 1), True),
        (IPv4Address("TCP", "not-an-ip", 1), False),
        (IPv4Address("TCP", "\x1b[31m", 1), False),
        (IPv4Address("TCP", "203.0.113.7", 65536), False),
        (IPv4Address("TCP", "203.0.113.7", -1), False),
        (IPv4Address("TCP", "2001:db8::7", 1), False),
        (IPv6Address("TCP", "203.0.113.7", 1), False),
        (IPv6Address("TCP", "fe80::1%eth0", 1), False),
        (UNIXAddress(b"/x"), False),
        (None, False),
    ],
)
def test_valid_client(address, valid):
    assert isValidClient(address) is valid


class SocketTransport:
    """Just what socketKey looks at on a unix.Server: its socket and getPeer()."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def getPeer(self) -> UNIXAddress:
        return UNIXAddress(None)


class Wrapper:
    """A protocol wrapper (TLS, PROXY) in front of the real transport."""

    def __init__(self, transport: object) -> None:
        self.transport = transport

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "203.0.113.7", 1)  # what a PROXY header said


def test_unix_socket_peer_is_keyed_by_uid():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peerUid(a) == os.getuid()
        assert socketKey(SocketTransport(a)) == f"uid:{os.getuid()}"
        assert socketKey(Wrapper(Wrapper(SocketTransport(a)))) == f"uid:{os.getuid()}"  # below TLS and PROXY


def test_unix_peer_without_a_socket_falls_back_to_one_key():
    assert socketKey(StringTransport(peerAddress=UNIXAddress(b"/run/echofile.sock"))) == UNIX_FALLBACK_KEY
    a, b = socket.socketpair(socket.AF_UNIX)
    a.close()
    b.close()
    assert peerUid(a) is None  # closed: getsockopt fails, no crash
    with socket.socket(socket.AF_INET) as tcp:
        assert peerUid(tcp) is None


def test_socket_key_is_the_socket_peer_below_the_wrappers():
    inner = StringTransport(peerAddress=IPv6Address("TCP", "::ffff:10.0.0.2", 5))
    assert socketKey(Wrapper(inner)) == "10.0.0.2"


def test_mapped_client_is_keyed_and_exempted_as_ipv4(served, logged):
    """An IPv4 client on a dual-stack listener: --lockout-exempt 127.0.0.0/8 covers it, logs say 127.0.0.1."""
    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=1, exempt=[parseExempt("127.0.0.0/8")])
    factory = makeFilesFactory(served, clock, penalties=penalties, maxPerAddress=1)
    peer = IPv6Address("TCP", "::ffff:7f00:1", 4000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"AUTH wrong\r\n")
    clock.advance(1)
    assert not penalties.isLockedOut("127.0.0.1") and len(penalties) == 0
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport)[-1] == b"#You are logged in."
    assert factory.limiter.countFor("127.0.0.1") == 1
    # The same client over IPv4 is the same address for --max-per-ip.
    other = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4001))
    otherTransport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4001))
    other.makeConnection(otherTransport)
    assert replies(otherTransport) == [b"!Server busy, try again later."]
    texts = [formatEvent(e) for e in logged]
    assert "files: connection from 127.0.0.1:4000" in texts
    assert not any("::ffff" in text for text in texts)


def test_lockout_keys_and_exemptions_are_normalised():
    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=2, exempt=[ipaddress.ip_network("::ffff:10.0.0.0/104")])
    penalties.recordFailure("::ffff:192.0.2.1")
    penalties.recordFailure("192.0.2.1")
    assert penalties.isLockedOut("192.0.2.1") and penalties.isLockedOut("::ffff:c000:201")
    for _ in range(3):
        penalties.recordFailure("10.1.2.3")  # exempt through the mapped spelling of its network
    assert not penalties.isLockedOut("10.1.2.3")


def test_unix_users_are_locked_out_separately():
    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=1)
    penalties.recordFailure("uid:1000")
    assert penalties.isLockedOut("uid:1000") and not penalties.isLockedOut("uid:1001")
