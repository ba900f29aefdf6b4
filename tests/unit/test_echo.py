"""Echo protocols on StringTransport and a fake clock."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.interfaces import IHalfCloseableProtocol

from echofile.echo import EchoDatagramProtocol, EchoFactory
from echofile.limits import ConnectionLimiter


def connect(factory, host="127.0.0.1", port=1):
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def makeFactory(clock=None, total=10, perAddress=10, idle=300.0):
    return EchoFactory(clock or Clock(), ConnectionLimiter(total, perAddress, "echo"), idle)


def test_echoes_bytes_exactly():
    protocol, transport = connect(makeFactory())
    data = bytes(range(256)) * 3
    protocol.dataReceived(data[:100])
    protocol.dataReceived(data[100:])
    assert transport.value() == data


def test_transport_is_its_own_streaming_producer():
    protocol, transport = connect(makeFactory())
    assert transport.producer is transport and transport.streaming


def test_half_close_flushes_then_closes():
    protocol, transport = connect(makeFactory())
    assert IHalfCloseableProtocol.providedBy(protocol)
    protocol.dataReceived(b"last words")
    protocol.readConnectionLost()
    assert transport.value() == b"last words"
    assert transport.producer is None  # else a paused transport would never close
    assert transport.disconnecting


def test_idle_timeout_then_abort():
    clock = Clock()
    protocol, transport = connect(makeFactory(clock, idle=5))
    clock.advance(4)
    protocol.dataReceived(b"x")
    clock.advance(4)
    assert not transport.disconnecting
    clock.advance(1.5)
    assert transport.disconnecting and not transport.disconnected
    assert transport.value() == b"x"  # nothing extra is ever sent
    clock.advance(10)
    assert transport.disconnected


def refused(connection) -> bool:
    protocol, transport = connection
    return transport.disconnecting and transport.value() == b"" and transport.producer is None


def test_caps_refuse_at_once_and_release():
    factory = makeFactory(total=3, perAddress=2)
    first, _ = connect(factory, port=1)
    connect(factory, port=2)
    over = connect(factory, port=3)
    assert refused(over)
    over[0].connectionLost(None)  # a refused connection gives back nothing
    assert not refused(connect(factory, host="10.0.0.9"))
    assert refused(connect(factory, host="10.0.0.8"))
    first.connectionLost(None)
    assert not refused(connect(factory, port=4))


def test_udp_echo():
    class Recorder:
        def __init__(self):
            self.sent = []

        def write(self, data, addr):
            self.sent.append((data, addr))

    protocol = EchoDatagramProtocol()
    protocol.transport = Recorder()
    protocol.datagramReceived(b"\x00ping\xff", ("127.0.0.1", 5555))
    assert protocol.transport.sent == [(b"\x00ping\xff", ("127.0.0.1", 5555))]


def test_udp_write_error_is_not_fatal():
    class Failing:
        def write(self, data, addr):
            raise OSError(111, "refused")

    protocol = EchoDatagramProtocol()
    protocol.transport = Failing()
    protocol.datagramReceived(b"x", ("127.0.0.1", 5555))
