"""
Pins each behaviour of a private Twisted API that echofile.twistedinternals
relies on: if a Twisted upgrade changes one, this module fails, not the server.
"""

from __future__ import annotations

import os
import socket

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure

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


def test_close_flushed_closes_an_idle_connection_now(connection) -> None:
    """Nothing to send: the orderly close loseConnection would make one writability event later, now."""
    conn, theirs = connection
    lost: list = []
    conn.protocol.connectionLost = lost.append
    assert internals.closeFlushed(conn)
    assert not conn.connected and conn.disconnected and lost[0].check(ConnectionDone)
    theirs.settimeout(5)
    assert theirs.recv(10) == b""


def test_close_flushed_leaves_anything_still_sending(connection) -> None:
    conn, _ = connection
    conn.write(b"x")
    assert not internals.closeFlushed(conn) and conn.connected
    conn.dataBuffer, conn._tempDataBuffer, conn._tempDataLen = b"", [], 0
    conn.producer = object()
    assert not internals.closeFlushed(conn) and conn.connected
    conn.producer = None
    conn.TLS = True
    assert not internals.closeFlushed(conn) and conn.connected
    assert not internals.closeFlushed(StringTransport())


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
    reused = bytearray(b"y" * 1000)
    internals.writeTLSBatched(transport, memoryview(reused))
    reused[:] = bytes(1000)  # the caller's buffer, reused: the transport must have its own copy
    assert transport.value() == b"x" * 100_000 + b"y" * 1000


def test_tls_transport_has_the_state_the_batched_write_reads() -> None:
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory

    factory = TLSMemoryBIOFactory(ssl.CertificateOptions(), True, Factory.forProtocol(Protocol))
    tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert type(tls) in internals.tlsrecords._TLS_TYPES
    tls.makeConnection(StringTransport())
    for name in ("_tlsConnection", "_handshakeDone", "_lostTLSConnection", "_appSendBuffer", "_aggregator"):
        assert hasattr(tls, name), name
    assert tls._handshakeDone is False and tls._appSendBuffer == []


def test_ssl_endpoint_keeps_its_certificate_options() -> None:
    """ssl: (also under haproxy:) keeps the options it listens with; serverTLSOptions finds them, nothing else."""
    from twisted.internet import ssl
    from twisted.internet.endpoints import serverFromString
    from twisted.test import __file__ as testPackage
    import os

    pem = os.path.join(os.path.dirname(testPackage), "server.pem")
    reactor = MemoryReactor()
    plain = serverFromString(reactor, f"ssl:0:privateKey={pem}")
    options = internals.serverTLSOptions(plain)
    assert isinstance(options, ssl.CertificateOptions)
    assert options is plain._sslContextFactory
    wrapped = internals.serverTLSOptions(serverFromString(reactor, f"haproxy:ssl:0:privateKey={pem}"))
    assert isinstance(wrapped, ssl.CertificateOptions)
    assert internals.serverTLSOptions(serverFromString(reactor, "tcp:0")) is None
    assert internals.serverTLSOptions(serverFromString(reactor, "haproxy:tcp:0")) is None


def test_every_server_connection_is_made_from_the_one_cached_context() -> None:
    """What resumeSessions changes on getContext() reaches each connection (and its session cache is shared)."""
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory

    options = ssl.CertificateOptions()
    factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(Protocol))
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    first = options.serverConnectionForTLS(protocol).get_context()
    second = options.serverConnectionForTLS(protocol).get_context()
    assert first is options.getContext() and second is first
# -- writeTLSBatched on a real socket: a server TLS transport over a socket pair, driven by hand ------------


class _CountingClock(Clock):
    """A Clock that counts the calls scheduled on it (cancelled ones too)."""

    scheduled = 0

    def callLater(self, *args, **kwargs):
        self.scheduled += 1
        return super().callLater(*args, **kwargs)


class _CountingSocket:
    """A socket whose send() calls are counted (a real socket's attributes cannot be replaced)."""

    def __init__(self, sock: socket.socket, sends: list[int]) -> None:
        self._sock = sock
        self._sends = sends

    def send(self, data, *flags) -> int:
        sent = self._sock.send(data, *flags)
        self._sends.append(sent)
        return sent

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _TLSPair:
    """
    A server C{TLSMemoryBIOProtocol} over a tcp.Connection on one end of a
    socket pair (a reactor that never runs: its writes are flushed by
    calling C{doWrite}), and a pyOpenSSL client with memory BIOs on the
    other end.
    """

    def __init__(self, maxVersion=None, protocol=None) -> None:
        import os

        import twisted.test
        from OpenSSL import SSL
        from twisted.internet import ssl
        from twisted.protocols.tls import TLSMemoryBIOFactory

        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        with open(pem, "rb") as f:
            cert = ssl.PrivateCertificate.loadPEM(f.read())
        options = cert.options()
        self.clock = _CountingClock()  # where BufferingTLSTransport schedules its flush of small writes
        factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(self.protocolClass), clock=self.clock)
        if protocol is not None:
            factory.protocol = protocol
        self.factory = factory
        self.tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.theirs.setblocking(False)
        self.tcp = tcp.Connection(self.ours, self.tls, MemoryReactorClock())
        self.tcp.connected = 1
        self.sends: list[int] = []  # the size of each send() to the server's socket
        self.tcp.socket = _CountingSocket(self.ours, self.sends)
        self.tls.makeConnection(self.tcp)
        context = SSL.Context(SSL.TLS_METHOD)
        if maxVersion is not None:
            context.set_max_proto_version(maxVersion)
        self.client = SSL.Connection(context, None)
        self.client.set_connect_state()
        self.plain = bytearray()
        self.queued: list[int] = []  # bytes left in the socket transport after each flight the server got
        self.sendsPerFlight: list[int] = []  # send() calls the server made while handling each flight
        for _ in range(10):
            self._clientStep()
            self.pump()
            if self.tls._handshakeDone and self.client.get_peer_finished() is not None:
                break
        self._clientStep()
        self.pump()
        assert self.tls._handshakeDone

    #: What the TLS layer wraps (a subclass may say something once the handshake is done).
    protocolClass = Protocol

    def _clientStep(self) -> None:
        from OpenSSL import SSL

        try:
            self.client.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            out = self.client.bio_read(1 << 20)
        except SSL.WantReadError:
            return
        before = len(self.sends)
        self.tls.dataReceived(out)
        self.queued.append(internals.unsentBytes(self.tcp))
        self.sendsPerFlight.append(len(self.sends) - before)

    def flush(self) -> None:
        """Let the server's socket transport send what it buffered (what the reactor would do)."""
        while internals.unsentBytes(self.tcp):
            before = internals.unsentBytes(self.tcp)
            self.tcp.doWrite()
            if internals.unsentBytes(self.tcp) == before:
                self.read()

    def read(self) -> None:
        """Everything the socket holds, into the client (its plaintext into C{plain})."""
        from OpenSSL import SSL

        while True:
            try:
                data = self.theirs.recv(1 << 20)
            except BlockingIOError:
                break
            self.client.bio_write(data)
        while True:
            try:
                self.plain += self.client.recv(1 << 20)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                break

    def pump(self) -> None:
        self.flush()
        self.read()

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def tlsPair():
    pair = _TLSPair()
    yield pair
    pair.close()


def test_tls_connection_has_what_the_batched_write_uses(tlsPair) -> None:
    """pyOpenSSL's connection, its SSL and write BIO, and the partial-write mode it sets, as writeTLSBatched reads them."""
    from OpenSSL.SSL import _ffi, _lib

    connection = tlsPair.tls._tlsConnection
    assert _lib.SSL_clear_mode(connection._ssl, 0) & internals.tlsrecords._PARTIAL_WRITE  # pyOpenSSL turns it on
    assert _lib.BIO_get_mem_data(connection._from_ssl, _ffi.NULL) == 0  # drained by the handshake
    connection.send(b"x" * 40_000)
    assert 16_384 < _lib.BIO_get_mem_data(connection._from_ssl, _ffi.NULL) < 17_000  # one record: partial writes
    assert len(internals.tlsrecords._records.fill(connection._from_ssl)) > 16_384
    assert _lib.BIO_get_mem_data(connection._from_ssl, _ffi.NULL) == 0


def test_tls_batched_write_sends_a_chunk_straight_to_the_socket(tlsPair) -> None:
    sends = []
    connection = tlsPair.tls._tlsConnection
    real = connection.send
    connection.send = lambda data: sends.append(len(data)) or real(data)
    chunk = bytearray(os.urandom(127 * 1024))
    original = bytes(chunk)
    internals.writeTLSBatched(tlsPair.tls, memoryview(chunk))
    assert sends == [len(chunk)]  # one SSL_write for the whole chunk, not one per 16 KiB record
    assert internals.unsentBytes(tlsPair.tcp) == 0  # sent, not left in the transport for the next reactor turn
    chunk[:] = bytes(len(chunk))  # the caller reuses its buffer
    tlsPair.read()
    assert tlsPair.plain == original
    from OpenSSL.SSL import _lib

    assert _lib.SSL_clear_mode(connection._ssl, 0) & internals.tlsrecords._PARTIAL_WRITE  # restored for Twisted's own writes


def test_tls_batched_write_queues_behind_a_full_socket_in_order(tlsPair) -> None:
    """The peer stops reading: what the socket refuses is copied into the transport, later chunks queue behind it."""
    expected = bytearray()
    chunk = bytearray(64 * 1024)
    for i in range(400):
        chunk[:] = os.urandom(len(chunk))  # the same buffer every time, as BodySender does
        internals.writeTLSBatched(tlsPair.tls, chunk)
        expected += chunk
        if internals.unsentBytes(tlsPair.tcp) > 0 and i > 2:
            queued = internals.unsentBytes(tlsPair.tcp)
            chunk[:] = os.urandom(len(chunk))
            internals.writeTLSBatched(tlsPair.tls, chunk)  # must not jump the queue
            expected += chunk
            assert internals.unsentBytes(tlsPair.tcp) > queued
            break
    else:
        pytest.fail("the socket never filled")
    tlsPair.pump()
    assert tlsPair.plain == expected


def test_tls_batched_write_takes_twisteds_write_after_a_failed_send(tlsPair) -> None:
    from OpenSSL.SSL import Error, _lib

    connection = tlsPair.tls._tlsConnection
    real = connection.send
    failures = []

    def failOnce(data):
        if not failures:
            failures.append(len(data))
            raise Error([])
        return real(data)

    connection.send = failOnce
    chunk = bytearray(os.urandom(100_000))
    original = bytes(chunk)
    internals.writeTLSBatched(tlsPair.tls, chunk)
    chunk[:] = bytes(len(chunk))
    assert failures == [100_000]
    assert _lib.SSL_clear_mode(connection._ssl, 0) & internals.tlsrecords._PARTIAL_WRITE
    tlsPair.pump()
    assert tlsPair.plain == original


def test_tls_batched_write_with_a_tls12_peer() -> None:
    from OpenSSL import SSL

    pair = _TLSPair(maxVersion=SSL.TLS1_2_VERSION)
    try:
        assert pair.client.get_protocol_version_name() == "TLSv1.2"
        chunk = os.urandom(127 * 1024)
        internals.writeTLSBatched(pair.tls, chunk)
        assert internals.unsentBytes(pair.tcp) == 0
        pair.read()
        assert pair.plain == chunk
    finally:
        pair.close()


def test_tls_writes_dropped_once_aborted(tlsPair) -> None:
    assert not internals.tlsWritesDropped(tlsPair.tls)
    assert not internals.tlsWritesDropped(StringTransport())
    tlsPair.tls.abortConnection()
    assert internals.tlsWritesDropped(tlsPair.tls)


def test_tls_batched_write_can_be_told_to_queue(tlsPair) -> None:
    """direct=False: the records wait in the socket transport (which pauses a producer) even with room in the socket."""
    chunk = os.urandom(127 * 1024)
    assert internals.writeTLSBatched(tlsPair.tls, chunk) is True
    assert internals.writeTLSBatched(tlsPair.tls, chunk, direct=False) is False
    assert internals.unsentBytes(tlsPair.tcp) > len(chunk)
    tlsPair.pump()
    assert tlsPair.plain == chunk * 2
def test_log_publisher_keeps_its_observers_in_order() -> None:
    from twisted.logger import LogPublisher

    first, second = (lambda event: None), (lambda event: None)
    publisher = LogPublisher(first)
    publisher.addObserver(second)
    assert internals.logObservers(publisher) == [first, second]
    publisher.removeObserver(first)
    assert internals.logObservers(publisher) == [second]


def test_a_log_file_writes_under_the_lock_we_give_it(tmp_path) -> None:
    """twistd's LogFile: write and rotate take the instance's _threadable_lock, which nativeLogFileLock replaces."""
    import threading

    from twisted.logger import textFileLogObserver
    from twisted.python.logfile import LogFile

    class CountingLock:
        def __init__(self) -> None:
            self.lock, self.acquired = threading.RLock(), 0

        def acquire(self) -> None:
            self.acquired += 1
            self.lock.acquire()

        def release(self) -> None:
            self.lock.release()

    logFile = LogFile.fromFullPath(str(tmp_path / "twistd.log"))
    observer = textFileLogObserver(logFile)
    assert internals.observerFile(observer) is logFile
    assert internals.nativeLogFileLock(logFile)
    assert type(logFile._threadable_lock) is type(threading.RLock())
    counting = logFile.__dict__["_threadable_lock"] = CountingLock()
    logFile.write("one\n")
    logFile.rotate()
    assert counting.acquired == 2
    assert not internals.nativeLogFileLock(object())
    logFile.close()


# -- echofile.tlslayer: the steps of TLSMemoryBIOProtocol it does itself ------------------------------


def test_tls_protocol_has_the_steps_tlslayer_replaces() -> None:
    """The private methods and attributes connectTLS repeats, and the one output path sendTLSOutput replaces."""
    from twisted.internet import ssl
    from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    for name in ("_flushSendBIO", "_checkHandshakeStatus", "_shutdownTLS", "_tlsShutdownFinished"):
        assert callable(getattr(TLSMemoryBIOProtocol, name)), name
    factory = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, Factory.forProtocol(Protocol))
    assert factory.protocol is BufferingTLSTransport  # what useEchofileTLS expects to replace
    assert callable(factory._creatorCallable)
    tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert tls._connectWrapped is True
    aggregator = tls._aggregator
    assert aggregator._buffer == [] and aggregator._scheduled is None
    assert tls._producer is None and tls._aborted is False  # releaseProducer, flushBeforeShutdown


def test_connect_tls_declares_the_transports_interfaces_once(monkeypatch) -> None:
    """Twisted's makeConnection calls directlyProvides once per interface, then once more; ours once."""
    from twisted.protocols import policies, tls as twistedTLS
    from zope.interface import providedBy

    from echofile.tlslayer import EchofileTLS

    calls: list[str] = []
    for module in (internals.tlssteps, twistedTLS, policies):
        real = module.directlyProvides
        monkeypatch.setattr(module, "directlyProvides",
                            lambda obj, *spec, _real=real, _name=module.__name__: calls.append(_name) or _real(obj, *spec))
    ours = _TLSPair(protocol=EchofileTLS)
    try:
        assert calls == ["echofile.twistedinternals.tlssteps"]
        calls.clear()
        stock = _TLSPair()
        assert len(calls) > 2  # what was saved
        try:
            assert list(providedBy(ours.tls)) == list(providedBy(stock.tls))
            assert set(providedBy(ours.tcp)) <= set(providedBy(ours.tls))
        finally:
            stock.close()
    finally:
        ours.close()


def test_tls_output_goes_straight_to_the_socket() -> None:
    """Each handshake flight reaches the socket at once (Twisted's waits in the transport for a reactor turn)."""
    from echofile.tlslayer import EchofileTLS

    stock = _TLSPair()
    ours = _TLSPair(protocol=EchofileTLS)
    try:
        assert any(stock.queued)
        assert ours.queued and not any(ours.queued)
        ours.tls.write(b"x" * 100_000)
        ours.tls._aggregator.flush()
        assert internals.unsentBytes(ours.tcp) == 0
        ours.read()
        assert ours.plain == b"x" * 100_000
    finally:
        stock.close()
        ours.close()


def test_tls_output_queues_behind_what_the_socket_transport_holds() -> None:
    """The peer stops reading: records the socket refuses wait in the transport, later ones behind them."""
    from echofile.tlslayer import EchofileTLS

    pair = _TLSPair(protocol=EchofileTLS)
    try:
        expected = bytearray()
        for _ in range(400):
            chunk = os.urandom(64 * 1024)
            pair.tls.write(chunk)
            pair.tls._aggregator.flush()
            expected += chunk
            if internals.unsentBytes(pair.tcp):
                break
        else:
            pytest.fail("the socket never filled")
        queued = internals.unsentBytes(pair.tcp)
        pair.tls.write(b"tail")
        pair.tls._aggregator.flush()
        expected += b"tail"
        assert internals.unsentBytes(pair.tcp) > queued  # behind the rest, not sent ahead of it
        pair.pump()
        assert pair.plain == expected
    finally:
        pair.close()


class _Greeting(Protocol):
    """Says one line when the handshake is done, like a files session."""

    def handshakeCompleted(self) -> None:
        self.transport.write(b"#Server Ready.\r\n")


def _greetingPair(protocol=None) -> _TLSPair:
    from twisted.internet.interfaces import IHandshakeListener
    from zope.interface import classImplements

    classImplements(_Greeting, IHandshakeListener)

    class Pair(_TLSPair):
        protocolClass = _Greeting

    return Pair(protocol=protocol)


def test_what_is_written_while_handling_input_goes_out_at_once() -> None:
    """The greeting after the handshake: sent when dataReceived is done, no flush left for the next reactor turn."""
    from echofile.tlslayer import EchofileTLS

    stock = _greetingPair()
    ours = _greetingPair(EchofileTLS)
    try:
        assert stock.clock.getDelayedCalls()  # Twisted's: the greeting waits for a timer
        assert ours.clock.scheduled == 0  # none made (and cancelled) either
        assert internals.unsentBytes(ours.tcp) == 0
        # The session tickets and the greeting in one send: sent one by one, the greeting would wait for the
        # client's delayed ACK of the tickets (Nagle) on a real connection.
        assert ours.sendsPerFlight and max(ours.sendsPerFlight) == 1
        ours.read()
        assert ours.plain == b"#Server Ready.\r\n"
        stock.clock.advance(0)
        stock.pump()
        assert stock.plain == b"#Server Ready.\r\n"
    finally:
        stock.close()
        ours.close()


def test_writes_outside_data_received_keep_twisteds_aggregation() -> None:
    """A write from a timer or a producer: still aggregated, and flushed on the next reactor turn."""
    from echofile.tlslayer import EchofileTLS

    pair = _TLSPair(protocol=EchofileTLS)
    try:
        pair.tls.write(b"one ")
        pair.tls.write(b"two")
        assert pair.clock.scheduled == 1 and internals.unsentBytes(pair.tcp) == 0
        pair.read()
        assert pair.plain == b""
        sends = len(pair.sends)
        pair.clock.advance(0)
        assert len(pair.sends) == sends + 1  # one record, one send
        pair.read()
        assert pair.plain == b"one two"
    finally:
        pair.close()


def test_flush_small_writes_after_connection_lost_does_nothing() -> None:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    from echofile.tlslayer import EchofileTLS

    pair = _TLSPair(protocol=EchofileTLS)
    try:
        pair.tls.connectionLost(Failure(ConnectionDone()))
        internals.flushSmallWrites(pair.tls)  # the _NullAggregator: nothing to send, nothing raised
        assert pair.clock.getDelayedCalls() == []
    finally:
        pair.close()


def test_listening_hook_hands_over_the_port_and_keeps_the_options_findable() -> None:
    from twisted.internet.defer import succeed
    from twisted.internet.endpoints import serverFromString
    from twisted.test import __file__ as testPackage

    pem = os.path.join(os.path.dirname(testPackage), "server.pem")
    endpoint = serverFromString(MemoryReactor(), f"ssl:0:privateKey={pem}")
    hooked: list[object] = []
    wrapped = internals.ListeningHook(endpoint, hooked.append)
    assert internals.serverTLSOptions(wrapped) is endpoint._sslContextFactory
    port = object()
    endpoint.listen = lambda factory: succeed(port)
    results: list[object] = []
    wrapped.listen(Factory()).addCallback(results.append)
    assert hooked == [port] and results == [port]


def test_tls_factory_of_a_port() -> None:
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory

    class Port:
        factory = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, Factory.forProtocol(Protocol))

    assert internals.tlsFactoryOf(Port()) is Port.factory
    Port.factory = Factory()
    assert internals.tlsFactoryOf(Port()) is None
    assert internals.tlsFactoryOf(object()) is None


class _WritesThenFails(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"said before the error")
        raise ValueError("a bug in the session")


def test_what_was_written_before_an_exception_in_data_received_still_goes_out() -> None:
    """The exception reaches the reactor as before (it closes the connection); the reply is not left in the BIO."""
    from OpenSSL import SSL

    from echofile.tlslayer import EchofileTLS

    class Pair(_TLSPair):
        protocolClass = _WritesThenFails

    pair = Pair(protocol=EchofileTLS)
    try:
        pair.client.send(b"hello")
        with pytest.raises(ValueError):
            pair.tls.dataReceived(pair.client.bio_read(1 << 16))
        assert pair.clock.scheduled == 0 and not pair.tls._holding
        pair.read()
        assert pair.plain == b"said before the error"
    finally:
        pair.close()


def test_log_file_lines_write_what_log_file_write_does(tmp_path) -> None:
    """LogFileLines relies on LogFile's _file (unbuffered FileIO), size (characters), rotateLength and lock."""
    import io

    from twisted.logger import textFileLogObserver
    from twisted.python.logfile import DailyLogFile, LogFile

    def logged(directory, direct: bool) -> tuple[int, list[tuple[str, bytes]]]:
        directory.mkdir()
        logFile = LogFile("twistd.log", str(directory), rotateLength=20)
        observer = textFileLogObserver(logFile)
        assert type(logFile._file) is io.FileIO and logFile.size == 0
        if direct:
            assert internals.nativeLogFileLock(logFile)
            lines = internals.directLogFileLines(observer)
            assert lines is not None and internals.observerFile(observer) is lines and lines.logFile is logFile
        out = internals.observerFile(observer)
        for text in ["caf\u00e9 one\n", "two\n", "three three three\n", "four\n", b"five\n"]:
            out.write(text)
            out.flush()
        if direct:
            internals.restoreLogFile(observer, lines)
            assert internals.observerFile(observer) is logFile
        size = logFile.size
        logFile.close()
        return size, sorted((p.name, p.read_bytes()) for p in directory.iterdir())

    direct = logged(tmp_path / "direct", True)
    assert direct == logged(tmp_path / "twisted", False) and len(direct[1]) > 1  # rotated at the same lines
    daily = DailyLogFile("daily.log", str(tmp_path))
    assert internals.nativeLogFileLock(daily)
    assert internals.directLogFileLines(textFileLogObserver(daily)) is None  # rotates otherwise: left alone
    daily.close()
    assert internals.directLogFileLines(textFileLogObserver(io.StringIO())) is None
    unlocked = LogFile("unlocked.log", str(tmp_path))
    assert internals.directLogFileLines(textFileLogObserver(unlocked)) is None  # no lock of ours yet
    unlocked.close()


# -- the client's close_notify while the session is the transport's producer -------------------------------


class _Replier(LineReceiver):
    """Like a files session: the TLS transport's streaming producer, a reply line per command line."""

    delimiter = b"\n"
    stopped = 0

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def lineReceived(self, line: bytes) -> None:
        self.transport.write(b"#reply to " + line + b" " + b"." * 80 + b"\r\n")

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped += 1


def _closingFlight(pair: _TLSPair, commands: int, ending: str = "close_notify") -> bytes:
    """
    C{commands} lines and the client's close_notify (or, C{ending="bad record"}, a record that fails
    to decrypt: a fatal alert), as one flight (one read of the server).
    """
    from OpenSSL import SSL

    pair.client.sendall(b"".join(b"c%d\n" % i for i in range(commands)))
    if ending == "bad record":
        return pair.client.bio_read(1 << 20) + b"\x17\x03\x03\x00\x40" + b"\x00" * 64
    try:
        pair.client.shutdown()
    except SSL.Error:
        pass
    return pair.client.bio_read(1 << 20)


def _drainUntilClosed(pair: _TLSPair) -> object:
    """Let the server's socket transport write (the client reading) until it says the connection is done."""
    from OpenSSL import SSL

    for _ in range(1000):
        result = pair.tcp.doWrite()
        try:
            pair.read()  # the socket emptied first, then what the client can decrypt
        except SSL.Error:
            pass  # the server's fatal alert, after a bad record
        if result is not None:
            return result
        if not internals.unsentBytes(pair.tcp) and pair.tcp not in pair.tcp.reactor.getWriters():
            return None  # nothing left to write, nothing asked for: the connection stays open for ever
    return None


def _replierPair(version: str) -> _TLSPair:
    from OpenSSL import SSL

    from echofile.tlslayer import EchofileTLS

    class Pair(_TLSPair):
        protocolClass = _Replier

    pair = Pair(maxVersion=SSL.TLS1_2_VERSION if version == "TLSv1.2" else None, protocol=EchofileTLS)
    assert pair.client.get_protocol_version_name() == version
    return pair


@pytest.mark.parametrize("ending", ["close_notify", "bad record"])
@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_client_close_notify_closes_the_connection_once_flushed(version, ending) -> None:
    """
    Pipelined commands and close_notify (or a record that fails: a fatal alert) in one flight, their
    replies more than the socket transport's buffer: the connection closes once they are flushed.
    Twisted's TLS layer left the session's producer (paused by those replies) registered with the
    socket transport, which then resumed it when its buffer drained instead of closing: the connection
    stayed open, not reading, until the session's idle timeout.
    """
    from OpenSSL import SSL
    from twisted.internet import main

    pair = _replierPair(version)
    try:
        session = pair.tls.wrappedProtocol
        pair.tls.dataReceived(_closingFlight(pair, 2000, ending))
        assert _drainUntilClosed(pair) is main.CONNECTION_DONE
        if ending == "close_notify":
            assert pair.client.get_shutdown() & SSL.RECEIVED_SHUTDOWN  # the server's close_notify came last
        # The socket transport closes: the session is told to stop producing, once, as Twisted's would.
        assert session.stopped == 0
        pair.tcp.connectionLost(Failure(ConnectionDone()))
        assert session.stopped == 1
    finally:
        pair.close()


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_replies_written_before_the_clients_close_notify_go_out_in_tls_1_3(version) -> None:
    """
    TLS 1.3 (a close_notify ends only the client's sending): every reply to the commands that came with
    it goes out ahead of the server's own close_notify; Twisted dropped those still aggregated.  TLS 1.2
    discards pending writes (RFC 5246, 7.2.1), as Twisted does.
    """
    from OpenSSL import SSL
    from twisted.internet import main

    pair = _replierPair(version)
    try:
        pair.tls.dataReceived(_closingFlight(pair, 10))
        assert _drainUntilClosed(pair) is main.CONNECTION_DONE
        assert pair.client.get_shutdown() & SSL.RECEIVED_SHUTDOWN
        expected = b"".join(b"#reply to c%d " % i + b"." * 80 + b"\r\n" for i in range(10))
        assert pair.plain == (expected if version == "TLSv1.3" else b"")
    finally:
        pair.close()


# -- a client that pipelines and does not read: the session still pauses inside one read ------------------


class _PausingReplier(LineReceiver):
    """A files session's flow control: its transport's producer, pausing its own line loop when told to."""

    delimiter = b"\n"
    handled = 0

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # LineReceiver's pause/resume: stop and resume the line loop

    def lineReceived(self, line: bytes) -> None:
        self.handled += 1
        self.transport.write(b"#reply to " + line + b" " + b"." * 80 + b"\r\n")


def test_pipelined_commands_in_one_read_are_paused_by_a_full_buffer() -> None:
    """
    One read of pipelined commands whose replies are far more than the socket takes: OpenSSL's output is
    sent once it passes the socket transport's buffer size, so the buffer fills and the session pauses
    within the read, as over plain TCP and with Twisted's TLS layer; held to the end of the read, all the
    replies (1.8 MB here, 17 times the input for HELP) waited in memory first, per connection.
    """
    from echofile.tlslayer import EchofileTLS

    class Pair(_TLSPair):
        protocolClass = _PausingReplier

    pair = Pair(protocol=EchofileTLS)
    try:
        session = pair.tls.wrappedProtocol
        lines = b"".join(b"c%d\n" % i for i in range(20_000))
        pair.client.sendall(lines)
        pair.tls.dataReceived(pair.client.bio_read(1 << 20))
        assert session.paused and session.handled < 20_000
        assert internals.unsentBytes(pair.tcp) < 4 * pair.tcp.bufferSize
        # The client reads: every reply, in order.
        expected = b"".join(b"#reply to c%d " % i + b"." * 80 + b"\r\n" for i in range(20_000))
        for _ in range(10_000):
            if len(pair.plain) >= len(expected):
                break
            pair.clock.advance(0)  # Twisted's next-turn flush of what was written outside dataReceived
            pair.tcp.doWrite()
            pair.read()
        assert pair.plain == expected
    finally:
        pair.close()
