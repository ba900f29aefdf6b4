"""The real services on 127.0.0.1 endpoints, driven by real TCP clients."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from echofile.echo import EchoFactory
from echofile.limits import ConnectionLimiter
from loopbackhelpers import Server, deferLaterTick
from support import PASSWORD, makeFilesFactory


@pytest.fixture
def echoServer():
    server = Server(EchoFactory(reactor, ConnectionLimiter(100, 100, "echo"), 300.0))
    pytest_twisted.blockon(server.start())
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def filesServer(served):
    server = Server(makeFilesFactory(served, reactor))
    pytest_twisted.blockon(server.start())
    yield server
    pytest_twisted.blockon(server.stop())


@pytest_twisted.inlineCallbacks
def test_echo_full_duplex_large(echoServer):
    client = yield echoServer.connect()
    payload = os.urandom(4 * 1024 * 1024)
    client.transport.write(payload)
    data = yield client.until(lambda d: len(d) >= len(payload))
    assert data == payload


@pytest_twisted.inlineCallbacks
def test_echo_half_close(echoServer):
    client = yield echoServer.connect()
    client.transport.write(b"\x00\xffbye")
    client.transport.loseWriteConnection()
    yield client.closed
    assert client.data == b"\x00\xffbye"


@pytest_twisted.inlineCallbacks
def test_echo_peer_that_does_not_read_pauses_the_server(echoServer):
    client = yield echoServer.connect()
    client.transport.pauseProducing()  # we stop reading
    chunk = b"x" * 65536
    for _ in range(200):  # 12.5 MiB offered
        client.transport.write(chunk)
    # Let the server read until its own write buffer fills and it stops reading.
    serverSide = None
    for _ in range(2000):
        yield deferLaterTick()
        connections = [p for p in reactor.getReaders() + reactor.getWriters() if getattr(p, "getHost", None)]
        serverSide = next(
            (c for c in connections if getattr(c, "protocol", None).__class__.__name__ == "EchoProtocol"), None
        )
        if serverSide is not None and serverSide.producerPaused:
            break
    assert serverSide is not None and serverSide.producerPaused
    buffered = len(serverSide.dataBuffer) + serverSide._tempDataLen
    assert buffered < 1024 * 1024  # bounded by the transport's buffer, not by what was offered
    client.transport.resumeProducing()
    yield client.until(lambda d: len(d) >= 200 * 65536)
    assert client.data == chunk * 200


@pytest_twisted.inlineCallbacks
def test_files_session_and_large_transfer(filesServer, served):
    body = os.urandom(8 * 1024 * 1024 + 7)
    (served / "big.bin").write_bytes(body)
    client = yield filesServer.connect()
    yield client.until(lambda d: d == b"#Server Ready.\r\n")
    client.transport.write(b"AUTH " + PASSWORD.encode() + b"\nFILE big.bin\nHELP\nQUIT\n")
    yield client.closed
    header = b"#Sending big.bin (%d bytes).\r\n" % len(body)
    expected = (
        b"#Server Ready.\r\n#You are logged in.\r\n" + header + body
        + b"\r\n#File big.bin sent successfully.\r\n"
        + b"#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO.\r\n#Bye.\r\n"
    )
    assert client.data == expected


@pytest_twisted.inlineCallbacks
def test_files_slow_reader_holds_the_transfer(filesServer, served):
    (served / "big.bin").write_bytes(b"z" * (16 * 1024 * 1024))
    client = yield filesServer.connect()
    yield client.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
    client.transport.pauseProducing()
    client.transport.write(b"AUTH " + PASSWORD.encode() + b"\nFILE big.bin\n")
    for _ in range(300):
        yield deferLaterTick()
    sessions = [c for c in reactor.getWriters() + reactor.getReaders() if getattr(c, "protocol", None).__class__.__name__ == "FileSession"]
    assert len(sessions) == 1
    transport = sessions[0]
    sender = transport.producer
    assert sender is not None and 0 < sender.sent < 16 * 1024 * 1024  # stalled, not finished
    assert len(transport.dataBuffer) + transport._tempDataLen < 1024 * 1024
    client.transport.resumeProducing()
    yield client.until(lambda d: d.endswith(b"#File big.bin sent successfully.\r\n"))
