"""
Pins each behaviour of a private Twisted API that echofile.twistedinternals
relies on: if a Twisted upgrade changes one, this module fails, not the server.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

from echofile import twistedinternals as internals


@pytest.fixture
def connection():
    """A plain tcp.Connection over a socket pair, on a reactor that never runs."""
    ours, theirs = socket.socketpair()
    conn = tcp.Connection(ours, Protocol(), MemoryReactor())
    conn.connected = 1
    yield conn, theirs
    ours.close()
    theirs.close()


def test_plain_tcp_connection_has_the_buffer_we_read(connection) -> None:
    conn, _ = connection
    assert internals.directSocket(conn) is conn.socket
    assert internals.sendfileDescriptor(conn) == conn.fileno()
    assert internals.canSendDirectly(conn)
    assert internals.unsentBytes(conn) == 0


def test_a_write_is_buffered_where_we_look(connection) -> None:
    """transport.write keeps the bytes (the reactor has not run): the direct path must wait behind them."""
    conn, _ = connection
    conn.write(b"12345")
    assert internals.unsentBytes(conn) == 5
    assert not internals.canSendDirectly(conn)


def test_a_pending_half_close_stops_direct_sends(connection) -> None:
    conn, _ = connection
    conn.loseWriteConnection()
    assert conn._writeDisconnecting
    assert not internals.canSendDirectly(conn)


def test_other_transports_take_the_public_path(connection) -> None:
    conn, _ = connection
    conn.TLS = True
    assert internals.directSocket(conn) is None
    assert internals.sendfileDescriptor(conn) is None
    assert internals.directSocket(StringTransport()) is None
    assert internals.sendfileDescriptor(StringTransport()) is None


def test_line_receiver_buffer_and_loop_flag() -> None:
    seen: list[bool] = []

    class Lines(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            seen.append(internals.insideLineLoop(self))

    protocol = Lines()
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"one\ntw")
    assert seen == [True]
    assert not internals.insideLineLoop(protocol)
    assert internals.unframedInput(protocol) == b"tw"


def _wrapper():
    factory = HAProxyWrappingFactory(Factory.forProtocol(Protocol))
    wrapper = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    wrapper.makeConnection(StringTransport())
    return wrapper


def test_proxy_wrapper_header_is_parsed_into_proxy_info() -> None:
    wrapper = _wrapper()
    assert internals.isProxyWrapper(wrapper)
    assert not internals.isProxyWrapper(StringTransport())
    wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 127.0.0.1 5000 8008")
    assert internals.parsedHeader(wrapper) is None
    wrapper.dataReceived(b"\r\n")
    assert internals.parsedHeader(wrapper).source == IPv4Address("TCP", "203.0.113.7", 5000)


def test_proxy_wrapper_data_can_be_intercepted_and_restored() -> None:
    wrapper = _wrapper()
    taken: list[bytes] = []
    parse = wrapper.dataReceived
    internals.interceptData(wrapper, taken.append)
    wrapper.dataReceived(b"PROXY")
    assert taken == [b"PROXY"]
    internals.restoreData(wrapper)
    assert wrapper.dataReceived == parse
    wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 127.0.0.1 5000 8008\r\n")
    assert internals.parsedHeader(wrapper) is not None


def test_tls_batched_write_takes_the_public_path_elsewhere() -> None:
    transport = StringTransport()
    internals.writeTLSBatched(transport, b"x" * 100_000)
    assert transport.value() == b"x" * 100_000


def test_tls_transport_has_the_state_the_batched_write_reads() -> None:
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory

    factory = TLSMemoryBIOFactory(ssl.CertificateOptions(), True, Factory.forProtocol(Protocol))
    tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert type(tls) in internals._TLS_TYPES
    tls.makeConnection(StringTransport())
    for name in ("_tlsConnection", "_handshakeDone", "_lostTLSConnection", "_appSendBuffer", "_aggregator"):
        assert hasattr(tls, name), name
    assert tls._handshakeDone is False and tls._appSendBuffer == []


def test_log_publisher_keeps_its_observers_in_order() -> None:
    from twisted.logger import LogPublisher

    first, second = (lambda event: None), (lambda event: None)
    publisher = LogPublisher(first)
    publisher.addObserver(second)
    assert internals.logObservers(publisher) == [first, second]
    publisher.removeObserver(first)
    assert internals.logObservers(publisher) == [second]
