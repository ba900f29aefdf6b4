"""
Connections refused before their session began (docs/deploy.md, "Reading
the log"): each reason is one info line naming the peer as the log names
every peer, and all of them share the service's refusal budget
(L{echofile.limits.REFUSAL_LOG_LIMIT} per window, then one count).
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from echofile.limits import REFUSAL_LOG_LIMIT, REFUSAL_LOG_WINDOW
from support import makeFilesFactory

TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]
#: Refused connections per test: more than the budget lets through one by one.
OVER = REFUSAL_LOG_LIMIT + 5


def plain(factory, host: str, port: int) -> StringTransport:
    address = IPv4Address("TCP", host, port)
    transport = StringTransport(peerAddress=address)
    factory.buildProtocol(address).makeConnection(transport)
    return transport


def proxied(factory, port: int, data: bytes = b"") -> StringTransport:
    address = IPv4Address("TCP", "10.0.0.2", port)
    transport = StringTransport(peerAddress=address)
    wrapper = HAProxyWrappingFactory(factory).buildProtocol(address)
    wrapper.makeConnection(transport)
    if data:
        wrapper.dataReceived(data)
    return transport


def tls(factory, port: int) -> StringTransport:
    address = IPv4Address("TCP", "192.0.2.1", port)
    transport = StringTransport(peerAddress=address)
    directlyProvides(transport, ISSLTransport)
    factory.buildProtocol(address).makeConnection(transport)
    return transport


def totalCap(served, clock):
    factory = makeFilesFactory(served, clock, maxConnections=1)
    plain(factory, "192.0.2.100", 1)
    return lambda port: plain(factory, "192.0.2.1", port)


def perAddressCap(served, clock):
    factory = makeFilesFactory(served, clock, maxPerAddress=1)
    plain(factory, "192.0.2.1", 1)
    return lambda port: plain(factory, "192.0.2.1", port)


def untrustedProxy(served, clock):
    factory = makeFilesFactory(served, clock, trustedProxies=[])
    return lambda port: proxied(factory, port)


def headerTimeout(served, clock):
    factory = makeFilesFactory(served, clock, trustedProxies=TRUSTED, loginTimeout=1.0)

    def refuse(port: int) -> None:
        proxied(factory, port)
        clock.advance(1.0)

    return refuse


def badHeader(served, clock):
    factory = makeFilesFactory(served, clock, trustedProxies=TRUSTED)
    return lambda port: proxied(factory, port, b"PROXY TCP4 \x1b[2J 10.0.0.1 1 8008\r\n")


def handshakeTimeout(served, clock):
    factory = makeFilesFactory(served, clock, loginTimeout=1.0)

    def refuse(port: int) -> None:
        tls(factory, port)
        clock.advance(1.0)

    return refuse


@pytest.mark.parametrize(
    "setUp, line",
    [
        (totalCap, r"files: refused 192\.0\.2\.1:{port}: 1 connections open \(--max-connections\)"),
        (perAddressCap, r"files: refused 192\.0\.2\.1:{port}: 1 connections from its address open \(--max-per-ip\)"),
        (untrustedProxy, r"files: 10\.0\.0\.2:{port} is not a trusted proxy \(--trusted-proxy\): "
                         r"closed without reading its PROXY header"),
        (headerTimeout, r"files: no PROXY protocol header from 10\.0\.0\.2:{port} in 1\.0s \(--login-timeout\), closing"),
        (badHeader, r"files: invalid PROXY protocol header from 10\.0\.0\.2:{port} \(not a valid client address\): "
                    r"b'PROXY TCP4 \\x1b\[2J 10\.0\.0\.1 1 8008', closing"),
        (handshakeTimeout, r"files: TLS handshake with 192\.0\.2\.1:{port} not done in 1\.0s \(--login-timeout\), closing"),
    ],
    ids=["total-cap", "per-address-cap", "untrusted-proxy", "header-timeout", "bad-header", "handshake-timeout"],
)
def test_each_refusal_is_one_info_line_within_the_service_budget(served, logged, setUp, line):
    clock = Clock()
    refuse = setUp(served, clock)
    logged.clear()
    for port in range(5000, 5000 + OVER):
        refuse(port)
    refusals = [e for e in logged if e.get("log_format", "").startswith("{service}: ")]
    assert len(refusals) == REFUSAL_LOG_LIMIT  # the rest counted, not logged
    for port, event in zip(range(5000, 5000 + OVER), refusals):
        assert re.fullmatch(line.format(port=port), formatEvent(event)), formatEvent(event)
        assert event["log_level"] == LogLevel.info
    clock.advance(REFUSAL_LOG_WINDOW)
    logged.clear()
    refuse(6000)
    texts = [formatEvent(e) for e in logged if e.get("log_format", "").startswith("{service}: ")]
    assert texts[0] == f"files: refused {OVER - REFUSAL_LOG_LIMIT} further connections in 60.0s (not logged one by one)"
    assert re.fullmatch(line.format(port=6000), texts[1]), texts
