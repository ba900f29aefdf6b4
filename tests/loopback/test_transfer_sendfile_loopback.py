"""
BodySender on real 127.0.0.1 connections: the sendfile fast path and each
of its fallbacks (TLS, no sendfile on the platform, sendfile failing before
the first byte), with exact byte counts, truncation, backpressure and no
descriptor leak.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os
from pathlib import Path

import pytest
import pytest_twisted
import twisted.test
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from echofile import transfer
from echofile.share import OpenedFile
from echofile.transfer import BodySender, TransferInterrupted
from loopbackhelpers import Collector

HEADER = b"#Sending body.\r\n"
TRAILER = b"\r\n#Sent.\r\n"
SERVER_PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


def openFile(path: Path) -> OpenedFile:
    fd = os.open(path, os.O_RDONLY)
    return OpenedFile(fd=fd, size=os.fstat(fd).st_size, path=str(path))


class SendOnConnect(Protocol):
    """Says a header, sends the body with BodySender, then a trailer (or just closes on failure)."""

    def connectionMade(self) -> None:
        factory = self.factory
        self.transport.write(HEADER)
        factory.sender = BodySender(factory.opened, offset=getattr(factory, "offset", 0))
        d = factory.sender.beginSending(self.transport)
        d.addCallbacks(self._sent, self._failed)

    def _sent(self, size: int) -> None:
        self.transport.write(TRAILER)
        self.transport.loseConnection()
        self.factory.outcome.callback(size)

    def _failed(self, failure) -> None:
        self.transport.loseConnection()
        self.factory.outcome.callback([failure])  # a list: a bare Failure would errback

    def connectionLost(self, reason=None) -> None:
        self.factory.serverClosed.callback(None)


def openFds() -> int:
    """Descriptors open now, once garbage from earlier tests (sockets in cycles) is collected."""
    gc.collect()
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@inlineCallbacks
def transferOnce(opened: OpenedFile, tls: bool = False, callCount=None, offset: int = 0, client=None,
                 clientOptions=None):
    """
    Serve one body to one client; return (sender, outcome, collector) after both sides closed.

    With C{callCount} (how many sendfile calls so far), the client stops reading first, and the
    server must stall without spinning until it reads again.  C{offset}: the body starts there
    (RESUME); C{client}: the receiving protocol (a L{Collector}); C{clientOptions}: its TLS options.
    """
    factory = Factory.forProtocol(SendOnConnect)
    factory.opened = opened
    factory.offset = offset
    factory.outcome = Deferred()
    factory.serverClosed = Deferred()
    if tls:
        port = yield serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}"
        ).listen(factory)
        from twisted.internet import ssl

        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port,
                                      clientOptions or ssl.CertificateOptions())
    else:
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = client if client is not None else Collector(keep=False)
    try:
        yield connectProtocol(endpoint, client)
        if callCount is not None:
            client.transport.pauseProducing()
            # Wait until the server is stuck on a full socket, then check it is not spinning.
            last = -1
            while factory.sender is None or factory.sender.sent != last:
                last = factory.sender.sent if factory.sender else -1
                yield deferLater(reactor, 0.05, lambda: None)
            calls = callCount()
            yield deferLater(reactor, 0.2, lambda: None)
            assert callCount() - calls <= 2, "sender kept calling while the socket was full"
            assert not factory.outcome.called
            client.transport.resumeProducing()
        outcome = yield factory.outcome
        yield client.closed
        yield factory.serverClosed
    finally:
        yield port.stopListening()
    if isinstance(outcome, list):
        outcome = outcome[0]
    return factory.sender, outcome, client


def expected(content: bytes) -> tuple[int, str]:
    whole = HEADER + content + TRAILER
    return len(whole), hashlib.sha256(whole).hexdigest()


@pytest.fixture
def bigFile(tmp_path: Path) -> tuple[Path, bytes]:
    content = os.urandom(1024 * 1024) * 12 + b"tail"
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    return path, content


@pytest.fixture
def countCalls(monkeypatch):
    """Wrap transfer._sendfile to count its calls."""
    calls = []
    real = transfer._sendfile
    if real is None:
        pytest.skip("no os.sendfile on this platform")

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(transfer, "_sendfile", counting)
    return calls


@pytest_twisted.inlineCallbacks
def test_sendfile_sends_exact_bytes_after_the_header(bigFile, countCalls):
    path, content = bigFile
    yield transferOnce(openFile(path))  # a first run opens whatever the reactor keeps open (waker, ...)
    before = openFds()
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened)
    assert sender.mode == "sendfile" and countCalls
    assert outcome == len(content) and sender.sent == len(content)
    assert client.head.startswith(HEADER)
    assert (client.count, client.hash.hexdigest()) == expected(content)
    assert opened.fd == -1 and openFds() == before  # the file's descriptor is closed, sockets too


@pytest_twisted.inlineCallbacks
def test_sendfile_file_shrinking_closes_without_trailer(bigFile, countCalls):
    path, content = bigFile
    opened = openFile(path)  # size as announced: the full length
    os.truncate(path, 3 * 1024 * 1024 + 5)
    sender, outcome, client = yield transferOnce(opened)
    assert sender.mode == "sendfile"
    assert outcome.check(TransferInterrupted)
    assert client.count == len(HEADER) + 3 * 1024 * 1024 + 5  # exactly what the file still had, no trailer
    assert opened.fd == -1


@pytest_twisted.inlineCallbacks
def test_sendfile_keeps_backpressure(bigFile, countCalls):
    path, content = bigFile
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened, callCount=lambda: len(countCalls))
    assert sender.mode == "sendfile"
    assert (client.count, client.hash.hexdigest()) == expected(content)


@pytest_twisted.inlineCallbacks
def test_no_sendfile_on_platform_falls_back_to_chunks(bigFile, monkeypatch):
    monkeypatch.setattr(transfer, "_sendfile", None)
    path, content = bigFile
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened)
    assert sender.mode == "chunks"
    assert (client.count, client.hash.hexdigest()) == expected(content)
    assert opened.fd == -1


@pytest_twisted.inlineCallbacks
def test_sendfile_failing_before_first_byte_falls_back_to_chunks(bigFile, monkeypatch):
    calls = []

    def unsupported(*args):
        calls.append(args)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(transfer, "_sendfile", unsupported)
    path, content = bigFile
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened)
    assert len(calls) == 1 and sender.mode == "chunks"
    assert outcome == len(content)
    assert (client.count, client.hash.hexdigest()) == expected(content)


@pytest_twisted.inlineCallbacks
def test_sendfile_failing_after_first_byte_interrupts(bigFile, monkeypatch):
    real = transfer._sendfile
    if real is None:
        pytest.skip("no os.sendfile on this platform")

    def failsLater(out, fd, offset, count):
        if offset > 0:
            raise OSError(errno.EIO, "Input/output error")
        return real(out, fd, offset, min(count, 1000))

    monkeypatch.setattr(transfer, "_sendfile", failsLater)
    path, content = bigFile
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened)
    assert outcome.check(TransferInterrupted)
    assert sender.sent == 1000 and client.count == len(HEADER) + 1000
    assert opened.fd == -1


@pytest_twisted.inlineCallbacks
def test_tls_uses_chunks(bigFile, countCalls):
    path, content = bigFile
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened, tls=True)
    assert sender.mode == "chunks" and not countCalls
    assert (client.count, client.hash.hexdigest()) == expected(content)
    assert opened.fd == -1


@pytest.fixture
def socketWrites(monkeypatch):
    """
    Sizes of the server's big writes to its TCP transport, of its big socket sends (direct or
    the transport's own) and of its big C{SSL_write}s, in a dict (the handshake and the client's
    writes are smaller).
    """
    import socket

    from OpenSSL import SSL
    from twisted.internet import abstract

    sizes = {"write": [], "send": [], "ssl": []}
    realWrite, realSend, realSSL = abstract.FileDescriptor.write, socket.socket.send, SSL.Connection.send

    def write(self, data):
        if len(data) >= 8192:
            sizes["write"].append(len(data))
        return realWrite(self, data)

    def send(self, data, *flags):
        sent = realSend(self, data, *flags)
        if len(data) >= 8192:
            sizes["send"].append(sent)
        return sent

    def sslSend(self, data, flags=0):
        if len(data) >= 8192:
            sizes["ssl"].append(len(data))
        return realSSL(self, data, flags)

    monkeypatch.setattr(abstract.FileDescriptor, "write", write)
    monkeypatch.setattr(socket.socket, "send", send)
    monkeypatch.setattr(SSL.Connection, "send", sslSend)
    return sizes


@pytest_twisted.inlineCallbacks
def test_tls_body_is_written_a_chunk_at_a_time(bigFile, socketWrites):
    # Twisted's TLS write encrypts one 16 KiB record per SSL_write and hands each to the socket
    # transport separately (768 writes for 12 MiB); the batched write encrypts a chunk in one
    # SSL_write and sends its records straight to the socket, copying into the transport only
    # what the socket did not take (at most one chunk's records, which fit one send of it).
    from twisted.internet.abstract import FileDescriptor

    path, content = bigFile
    sender, outcome, client = yield transferOnce(openFile(path), tls=True)
    assert (client.count, client.hash.hexdigest()) == expected(content)
    chunks = -(-len(content) // BodySender.TLS_CHUNK_SIZE)
    assert len(socketWrites["ssl"]) == chunks
    assert len(socketWrites["write"]) <= chunks + 2
    assert sum(socketWrites["send"]) >= len(content)
    assert max(socketWrites["write"], default=0) <= FileDescriptor.SEND_LIMIT


@pytest_twisted.inlineCallbacks
def test_tls_file_shrinking_closes_without_trailer(bigFile):
    path, content = bigFile
    opened = openFile(path)
    os.truncate(path, 3 * 1024 * 1024 + 5)
    sender, outcome, client = yield transferOnce(opened, tls=True)
    assert sender.mode == "chunks" and outcome.check(TransferInterrupted)
    assert client.count == len(HEADER) + 3 * 1024 * 1024 + 5  # what the file still had, no trailer
    assert opened.fd == -1


@pytest_twisted.inlineCallbacks
def test_tls_keeps_backpressure(tmp_path, monkeypatch):
    # A client that stops reading: the sender stalls (no chunk read while the socket is full),
    # having handed over no more than socket buffers and a chunk; then the body completes intact.
    content = os.urandom(1024 * 1024) * 48
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    chunks = []
    real = transfer.writeTLSBatched

    def counting(consumer, data, **options):
        chunks.append(len(data))
        return real(consumer, data, **options)

    monkeypatch.setattr(transfer, "writeTLSBatched", counting)
    stalledAt = []

    def callCount():
        stalledAt.append(sum(chunks))
        return len(chunks)

    sender, outcome, client = yield transferOnce(openFile(path), tls=True, callCount=callCount)
    assert outcome == len(content)
    assert (client.count, client.hash.hexdigest()) == expected(content)
    assert stalledAt and stalledAt[0] < len(content) // 2


class ClosesAfter(Collector):
    """A client that drops the connection once it has C{limit} bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(keep=False)
        self.limit = limit

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.count >= self.limit and self.transport.connected:
            self.transport.abortConnection()


@pytest_twisted.inlineCallbacks
def test_tls_client_closing_mid_body_interrupts(bigFile):
    path, content = bigFile
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened, tls=True, client=ClosesAfter(2 * 1024 * 1024))
    assert outcome.check(TransferInterrupted)
    assert 0 < sender.sent < len(content)
    assert opened.fd == -1


@pytest_twisted.inlineCallbacks
def test_tls_connection_lost_between_two_chunks_interrupts(bigFile, monkeypatch):
    # The server drops the connection right after its third chunk: the sender must stop there,
    # release the file and never write the fourth.
    path, content = bigFile
    writes = []
    real = transfer.writeTLSBatched

    def thenAbort(consumer, data, **options):
        writes.append(len(data))
        allSent = real(consumer, data, **options)
        if len(writes) == 3:
            consumer.abortConnection()
        return allSent

    monkeypatch.setattr(transfer, "writeTLSBatched", thenAbort)
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened, tls=True)
    assert outcome.check(TransferInterrupted)
    assert len(writes) == 3 and sender.sent == 3 * BodySender.TLS_CHUNK_SIZE
    assert client.count <= len(HEADER) + sender.sent
    assert opened.fd == -1


@pytest_twisted.inlineCallbacks
def test_tls_resume_from_an_offset(bigFile):
    path, content = bigFile
    offset = 5 * 1024 * 1024 + 17  # not on a chunk boundary
    opened = openFile(path)
    sender, outcome, client = yield transferOnce(opened, tls=True, offset=offset)
    assert outcome == len(content) - offset
    assert (client.count, client.hash.hexdigest()) == expected(content[offset:])


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
@pytest_twisted.inlineCallbacks
def test_tls_body_with_each_protocol_version(bigFile, version):
    from twisted.internet import ssl

    level = getattr(ssl.TLSVersion, version)
    options = ssl.CertificateOptions(raiseMinimumTo=level, lowerMaximumSecurityTo=level)
    path, content = bigFile
    protocols = []

    class Checking(Collector):
        def dataReceived(self, data: bytes) -> None:
            if not protocols:
                protocols.append(self.transport.getHandle().get_protocol_version_name())
            super().dataReceived(data)

    sender, outcome, client = yield transferOnce(openFile(path), tls=True, client=Checking(keep=False),
                                                 clientOptions=options)
    assert protocols == [version.replace("_", ".")]
    assert (client.count, client.hash.hexdigest()) == expected(content)


@pytest_twisted.inlineCallbacks
def test_tls_direct_sends_come_in_bounded_bursts(bigFile, monkeypatch):
    # Nothing pauses a TLS pull producer while the socket takes every chunk: after TLS_BURST bytes
    # straight to the socket, one chunk must go through the transport's buffer (a reactor turn).
    path, content = bigFile
    calls = []
    real = transfer.writeTLSBatched

    def recording(consumer, data, direct=True):
        allSent = real(consumer, data, direct=direct)
        calls.append((len(data), direct, allSent))
        return allSent

    monkeypatch.setattr(transfer, "writeTLSBatched", recording)
    sender, outcome, client = yield transferOnce(openFile(path), tls=True)
    assert (client.count, client.hash.hexdigest()) == expected(content)
    burst = 0
    for size, direct, allSent in calls:
        assert direct == (burst < BodySender.TLS_BURST)
        burst = burst + size if allSent else 0
