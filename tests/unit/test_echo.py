"""Echo protocols on StringTransport and a fake clock."""

from __future__ import annotations

import pytest

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.interfaces import IHalfCloseableProtocol

from echofile.echo import EchoDatagramProtocol, EchoFactory
from echofile.eventlog import SESSION_LOG_LIMIT, SESSION_LOG_WINDOW
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


def test_echo_lines_name_the_peer_with_its_port(logged):
    from twisted.logger import formatEvent

    clock = Clock()
    protocol, transport = connect(makeFactory(clock, idle=5), port=4321)
    clock.advance(5)
    protocol.connectionLost(None)
    assert [formatEvent(e) for e in logged if e.get("log_format", "").startswith("echo:")] == [
        "echo: connection from 127.0.0.1:4321", "echo: 127.0.0.1:4321 idle, closing",
        "echo: connection from 127.0.0.1:4321 closed",
    ]


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


def test_udp_write_error_names_the_source_in_the_one_peer_format(logged):
    """host:port, IPv6 in brackets, IPv4-mapped as IPv4 (docs/deploy.md, "Reading the log")."""
    from twisted.logger import formatEvent

    class Failing:
        def write(self, data, addr):
            raise OSError(111, "refused")

    protocol = EchoDatagramProtocol()
    protocol.transport = Failing()
    for source in (("127.0.0.1", 5555), ("::1", 5556, 0, 0), ("::ffff:192.0.2.7", 5557, 0, 0)):
        protocol.datagramReceived(b"x", source)
    assert [formatEvent(e) for e in logged if "cannot answer" in e.get("log_format", "")] == [
        "udp echo: cannot answer 127.0.0.1:5555: [Errno 111] refused",
        "udp echo: cannot answer [::1]:5556: [Errno 111] refused",
        "udp echo: cannot answer 192.0.2.7:5557: [Errno 111] refused",
    ]


class FakeUDPTransport:
    """Records what is sent; listens on 127.0.0.1:7007."""

    def __init__(self, port=7007):
        from twisted.internet.address import IPv4Address

        self.sent = []
        self.host = IPv4Address("UDP", "127.0.0.1", port)

    def getHost(self):
        return self.host

    def write(self, data, addr):
        self.sent.append((data, addr))


def udpEcho(clock=None, **kwargs):
    from twisted.internet.task import Clock

    clock = clock or Clock()
    protocol = EchoDatagramProtocol(clock, **kwargs)
    protocol.makeConnection(FakeUDPTransport())
    return protocol, protocol.transport, clock


def test_udp_never_answers_its_own_port():
    """A datagram spoofed from our own port (from any address) would be echoed to ourselves for ever."""
    protocol, transport, _ = udpEcho()
    for host in ("127.0.0.1", "127.0.0.2", "192.0.2.7"):
        protocol.datagramReceived(b"loop", (host, 7007))
    assert transport.sent == []
    assert protocol.dropped == {"from a service port": 3}


def test_udp_never_answers_service_ports():
    from echofile.echo import REFUSED_SOURCE_PORTS

    assert {0, 7, 13, 17, 19, 37, 123, 53, 1900, 11211} <= REFUSED_SOURCE_PORTS
    protocol, transport, _ = udpEcho()
    for port in sorted(REFUSED_SOURCE_PORTS):
        protocol.datagramReceived(b"x", ("192.0.2.7", port))
    protocol.datagramReceived(b"ok", ("192.0.2.7", 40000))
    assert transport.sent == [(b"ok", ("192.0.2.7", 40000))]


def test_udp_rate_per_source_with_a_burst():
    protocol, transport, clock = udpEcho(rate=10)
    for _ in range(15):
        protocol.datagramReceived(b"a", ("192.0.2.1", 40000))
    protocol.datagramReceived(b"b", ("192.0.2.2", 40000))  # another source has its own bucket
    assert [d for d, _ in transport.sent].count(b"a") == 10 and (b"b", ("192.0.2.2", 40000)) in transport.sent
    assert protocol.dropped == {"over the rate": 5}
    clock.advance(0.5)  # refills 5 tokens
    transport.sent.clear()
    for _ in range(10):
        protocol.datagramReceived(b"a", ("192.0.2.1", 40001))  # the same address on another port
    assert len(transport.sent) == 5


def test_udp_rate_zero_is_off():
    protocol, transport, _ = udpEcho(rate=0)
    for _ in range(1000):
        protocol.datagramReceived(b"a", ("192.0.2.1", 40000))
    assert len(transport.sent) == 1000


def test_udp_rate_table_is_bounded():
    from echofile.echo import SourceRates
    from twisted.internet.task import Clock

    rates = SourceRates(Clock(), rate=1, burst=1, maxSources=3)
    for i in range(10):
        assert rates.allow(f"192.0.2.{i}")
    assert len(rates) == 3
    assert not rates.allow("192.0.2.9")  # recent sources are remembered


def test_udp_drops_are_logged_at_most_once_per_interval(logged):
    from echofile.echo import DROP_REPORT_INTERVAL

    protocol, transport, clock = udpEcho(rate=1)
    for second in range(int(DROP_REPORT_INTERVAL * 3)):
        for _ in range(50):
            protocol.datagramReceived(b"a", ("192.0.2.1", 40000))
            protocol.datagramReceived(b"a", ("127.0.0.1", 7007))
        clock.advance(1)
    reports = [e for e in logged if "dropped" in e.get("log_format", "")]
    assert len(reports) == 3
    assert reports[0]["counts"] == {"over the rate": 49 * 60, "from a service port": 50 * 60}
    protocol.datagramReceived(b"a", ("127.0.0.1", 7007))
    protocol.doStop()  # the last count is reported when the port closes, and no timer is left
    assert len([e for e in logged if "dropped" in e.get("log_format", "")]) == 4
    assert clock.getDelayedCalls() == []


def test_an_echo_reconnect_loop_writes_a_bounded_number_of_lines(logged):
    clock = Clock()
    factory = makeFactory(clock)
    for port in range(1, 201):
        protocol, transport = connect(factory, port=port)
        protocol.dataReceived(b"x")
        protocol.connectionLost(None)
    assert len([e for e in logged if e.get("log_format", "").startswith("echo:")]) <= 2 * 20 + 1
    clock.advance(SESSION_LOG_WINDOW)
    summaries = [e for e in logged if "suppressed" in e.get("log_format", "")]
    # twistd writes debug lines too: the connect and close lines are counted past the address's budget.
    assert [e["count"] for e in summaries] == [2 * 200 - SESSION_LOG_LIMIT]
