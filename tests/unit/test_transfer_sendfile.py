"""BodySender without a reactor: which mode it picks, and the sendfile mode's bookkeeping."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from twisted.internet.testing import StringTransport

from echofile import transfer
from echofile.share import OpenedFile
from echofile.transfer import BodySender, TransferInterrupted
from echofile.twistedinternals import sendfileDescriptor as _socketTransportFileno
from support import SocketTransportShell


def openFile(path: Path) -> OpenedFile:
    fd = os.open(path, os.O_RDONLY)
    return OpenedFile(fd=fd, size=os.fstat(fd).st_size, path=str(path))


class FakeSocketTransport(SocketTransportShell):
    """The shell, with writes only buffered and a C{flush} standing in for the reactor's doWrite."""

    def write(self, data: bytes) -> None:
        self._tempDataBuffer.append(data)
        self._tempDataLen += len(data)

    def flush(self) -> None:
        """What doWrite does once the socket is writable: send the buffer, then ask the producer."""
        data = self.dataBuffer[self.offset :] + b"".join(self._tempDataBuffer)
        self.socket.sendall(data)
        self.dataBuffer, self.offset, self._tempDataBuffer, self._tempDataLen = b"", 0, [], 0
        if self.producer is not None:
            self.producer.resumeProducing()


def readAll(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_string_transport_gets_chunks_bigger_than_16k(tmp_path: Path) -> None:
    content = os.urandom(300_000)
    (tmp_path / "f").write_bytes(content)
    opened = openFile(tmp_path / "f")
    transport = StringTransport()
    sender = BodySender(opened)
    results = []
    sender.beginSending(transport).addCallback(results.append)
    assert sender.mode == "chunks"
    writes = 0
    while transport.producer is not None:
        before = len(transport.value())
        transport.producer.resumeProducing()
        writes += 1
        assert len(transport.value()) - before > 16 * 1024 or transport.producer is None
    assert transport.value() == content and results == [len(content)]
    assert writes <= len(content) // (16 * 1024)
    assert opened.fd == -1


def test_empty_file_sends_nothing_and_closes(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"")
    opened = openFile(tmp_path / "e")
    results = []
    BodySender(opened).beginSending(StringTransport()).addCallback(results.append)
    assert results == [0] and opened.fd == -1


def test_mode_selection() -> None:
    assert _socketTransportFileno(StringTransport()) is None
    a, b = socket.socketpair()
    with a, b:
        plain = FakeSocketTransport(a)
        assert _socketTransportFileno(plain) == a.fileno()
        plain.TLS = True  # startTLS happened on this connection
        assert _socketTransportFileno(plain) is None


@pytest.mark.skipif(transfer._sendfile is None, reason="no os.sendfile on this platform")
def test_sendfile_waits_for_the_header_then_sends_exact_bytes(tmp_path: Path) -> None:
    content = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "f").write_bytes(content)
    opened = openFile(tmp_path / "f")
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        transport = FakeSocketTransport(a)
        transport.write(b"HEADER\r\n")
        progress: list[int] = []
        results: list[object] = []
        sender = BodySender(opened, onProgress=progress.append)
        sender.beginSending(transport).addBoth(results.append)
        assert sender.mode == "sendfile"
        assert sender.sent == 0 and transport.producer is sender  # header still buffered: nothing sent yet
        received = bytearray()
        while transport.producer is not None:
            transport.flush()  # the header first, then each writable event calls the sender again
            try:
                while True:
                    received += b.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        received += readAll(b, len(content) + 8 - len(received))
        assert bytes(received) == b"HEADER\r\n" + content
        assert results == [len(content)] and sum(progress) == len(content)
        assert transport.writing >= 1  # it asked for writability when the socket was full
        assert opened.fd == -1


@pytest.mark.skipif(transfer._sendfile is None, reason="no os.sendfile on this platform")
def test_sendfile_stop_producing_releases_the_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(8 * 1024 * 1024))
    opened = openFile(tmp_path / "f")
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        transport = FakeSocketTransport(a)
        sender = BodySender(opened)
        results: list[object] = []
        sender.beginSending(transport).addErrback(results.append)
        assert 0 < sender.sent < 8 * 1024 * 1024  # the socket filled up
        sender.stopProducing()  # the connection was lost
        assert results[0].check(TransferInterrupted) and opened.fd == -1
        assert transport.producer is None
