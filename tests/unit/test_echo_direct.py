"""The lean echo path without a reactor: fallback on other transports, idle bookkeeping, direct writes."""

from __future__ import annotations

import socket

import pytest

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echofile.echo import EchoFactory
from echofile.twistedinternals import directSocket as _directSocket
from echofile.limits import ConnectionLimiter
from support import SocketTransportShell


def connect(clock: Clock, idle: float | None = 5.0):
    factory = EchoFactory(clock, ConnectionLimiter(10, 10, "echo"), idle)
    address = IPv4Address("TCP", "127.0.0.1", 1)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def test_other_transports_get_everything_through_write() -> None:
    assert _directSocket(StringTransport()) is None
    protocol, transport = connect(Clock())
    protocol.dataReceived(b"abc")
    assert transport.value() == b"abc"


def test_idle_timer_is_not_moved_per_message() -> None:
    """Messages only note the time; the one timer re-arms itself for the rest when it fires."""
    clock = Clock()
    protocol, transport = connect(clock, idle=5)
    assert len(clock.getDelayedCalls()) == 1
    call = clock.getDelayedCalls()[0]
    for step in range(40):
        clock.advance(0.1)
        protocol.dataReceived(b"x")
    assert clock.getDelayedCalls() == [call] and call.getTime() == 5  # untouched by 40 messages
    clock.advance(1)  # t=5: fires, sees activity at t=4, re-arms for t=9
    assert not transport.disconnecting
    assert [c.getTime() for c in clock.getDelayedCalls()] == [pytest.approx(9)]
    clock.advance(3.9)
    assert not transport.disconnecting
    clock.advance(0.2)  # past t=9: idle for the whole timeout
    assert transport.disconnecting


def test_no_idle_timeout_means_no_timer() -> None:
    clock = Clock()
    protocol, transport = connect(clock, idle=None)
    protocol.dataReceived(b"x")
    assert clock.getDelayedCalls() == []


def test_connection_lost_cancels_the_timer() -> None:
    clock = Clock()
    protocol, transport = connect(clock, idle=5)
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_direct_write_when_nothing_is_buffered_then_buffer_in_order() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        transport = SocketTransportShell(a)
        factory = EchoFactory(Clock(), ConnectionLimiter(10, 10, "echo"), 5.0)
        protocol = factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        assert protocol._socket is a
        protocol.dataReceived(b"first")
        assert b.recv(100) == b"first" and transport.writing == 0  # no reactor round trip
        # Fill the socket: what it does not take is buffered by the transport...
        big = b"y" * (4 * 1024 * 1024)
        protocol.dataReceived(big)
        buffered = transport._tempDataLen
        assert 0 < buffered < len(big) and transport.writing == 1
        # ...and later data queues behind it instead of overtaking it.
        protocol.dataReceived(b"last")
        assert transport._tempDataLen == buffered + 4
        assert b"".join(transport._tempDataBuffer).endswith(b"last")


def test_no_direct_write_after_half_close_began() -> None:
    a, b = socket.socketpair()
    with a, b:
        transport = SocketTransportShell(a)
        factory = EchoFactory(Clock(), ConnectionLimiter(10, 10, "echo"), 5.0)
        protocol = factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        transport.disconnecting = True
        transport.connected = 1
        protocol.dataReceived(b"late")
        assert transport._tempDataLen == 4  # left to the transport, which decides
