"""
HASH and RESUME on a real server (tcp:0 / ssl:0 on 127.0.0.1) with real
threads: the digest cache, the server-wide job cap, RESUME through sendfile
and through TLS chunks, and a file that shrinks during a RESUME.
"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from echofile import transfer
from echofile.hashing import FileHasher
from support import PASSWORD, makeFilesFactory
from loopbackhelpers import SERVER_PEM, Server, TLSServer

SIZE = 8 * 1024 * 1024 + 7


def tick():
    return deferLater(reactor, 0.01, lambda: None)


@pytest.fixture
def body(served) -> bytes:
    data = os.urandom(SIZE)
    (served / "big.bin").write_bytes(data)
    return data


def startServer(served, hashes=None, tls: bool = False):
    factory = makeFilesFactory(served, reactor, hashes=hashes or FileHasher(deferToThread))
    if tls:
        server = TLSServer(factory, f"ssl:0:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}")
    else:
        server = Server(factory)
    return server.start()


@pytest.fixture
def sendfileCalls(monkeypatch):
    """Every os.sendfile call of BodySender, as (offset, count)."""
    calls: list[tuple[int, int]] = []
    real = transfer._sendfile
    assert real is not None

    def counting(out: int, fd: int, offset: int, count: int) -> int:
        calls.append((offset, count))
        return real(out, fd, offset, count)

    monkeypatch.setattr(transfer, "_sendfile", counting)
    return calls


@inlineCallbacks
def loggedIn(server):
    client = yield server.connect()
    yield client.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
    client.transport.write(b"AUTH " + PASSWORD.encode() + b"\n")
    yield client.until(lambda d: d.endswith(b"#You are logged in.\r\n"))
    del client.data[:]
    return client


def hashReply(name: str, data: bytes) -> bytes:
    return b"#SHA-256 of %s (%d bytes): %s.\r\n" % (name.encode(), len(data), hashlib.sha256(data).hexdigest().encode())


@pytest_twisted.inlineCallbacks
def test_second_hash_of_an_unchanged_file_reads_nothing(served, body, monkeypatch):
    reads = []
    real = os.preadv

    def counting(fd, buffers, offset):
        reads.append(offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counting)
    hashes = FileHasher(deferToThread)
    server = yield startServer(served, hashes)
    try:
        client = yield loggedIn(server)
        client.transport.write(b"HASH big.bin\nHASH big.bin\n")
        expected = hashReply("big.bin", body) * 2
        data = yield client.until(lambda d: len(d) >= len(expected))
        assert data == expected
        assert hashes.started == 1 and hashes.hits == 1 and hashes.bytesHashed == SIZE
        assert len(reads) == SIZE // (1024 * 1024) + 1  # one pass over the file, none for the second HASH
        # Touched: the same content, but the key changed, so it is read again.
        os.utime(served / "big.bin", ns=(1, 1))
        del client.data[:]
        client.transport.write(b"HASH big.bin\n")
        data = yield client.until(lambda d: len(d) >= len(expected) // 2)
        assert data == hashReply("big.bin", body) and hashes.started == 2
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_three_hashes_from_three_sessions_with_a_cap_of_two(served, body):
    gate = threading.Event()
    lock = threading.Lock()
    inThreads = [0, 0]  # now, most at once

    def gated(function):
        def run():
            with lock:
                inThreads[0] += 1
                inThreads[1] = max(inThreads[1], inThreads[0])
            try:
                gate.wait(30)
                return function()
            finally:
                with lock:
                    inThreads[0] -= 1

        return deferToThread(run)

    hashes = FileHasher(gated, maxJobs=2)
    server = yield startServer(served, hashes)
    try:
        clients = []
        for _ in range(3):
            clients.append((yield loggedIn(server)))
        for client in clients:
            client.transport.write(b"HASH big.bin\n")
        while hashes.active + hashes.queued < 3:
            yield tick()
        for _ in range(20):  # time for a third thread to start, if anything let it
            yield tick()
        assert (hashes.active, hashes.queued) == (2, 1)
        with lock:
            assert inThreads == [2, 2]
        gate.set()
        for client in clients:
            data = yield client.until(lambda d: d.endswith(b".\r\n"))
            assert data == hashReply("big.bin", body)
        assert hashes.peak == 2 and inThreads[1] == 2
        assert hashes.started == 2 and hashes.hits == 1  # the one that waited found the digest cached
    finally:
        gate.set()
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_session_gone_while_waiting_and_while_running(served, body):
    gate = threading.Event()
    hashes = FileHasher(lambda function: deferToThread(lambda: (gate.wait(30), function())[1]), maxJobs=1)
    server = yield startServer(served, hashes)
    try:
        running = yield loggedIn(server)
        waiting = yield loggedIn(server)
        running.transport.write(b"HASH big.bin\n")
        while hashes.active < 1:
            yield tick()
        waiting.transport.write(b"HASH big.bin\n")
        while hashes.queued < 1:
            yield tick()
        waiting.transport.abortConnection()
        yield waiting.closed
        while hashes.queued:
            yield tick()
        running.transport.abortConnection()
        yield running.closed
        while len(server.factory.sessions):  # the client's side closes at once; wait until the server has seen it
            yield tick()
        gate.set()
        while hashes.active:
            yield tick()
        assert hashes.started == 1 and hashes.bytesHashed == 0 and len(hashes.cache) == 0
        fresh = yield loggedIn(server)
        fresh.transport.write(b"HASH big.bin\n")
        data = yield fresh.until(lambda d: d.endswith(b".\r\n"))
        assert data == hashReply("big.bin", body)
    finally:
        gate.set()
        yield server.stop()


def resumeReply(offset: int, data: bytes) -> bytes:
    rest = data[offset:]
    return (b"#Sending big.bin from byte %d (%d bytes).\r\n" % (offset, len(rest))
            + rest + b"\r\n#File big.bin sent successfully.\r\n")


@pytest_twisted.inlineCallbacks
def test_resume_over_tcp_is_sendfile_from_the_offset(served, body, sendfileCalls):
    server = yield startServer(served)
    try:
        client = yield loggedIn(server)
        offset = SIZE - SIZE // 10
        client.transport.write(b"RESUME %d big.bin\nRESUME %d big.bin\nQUIT\n" % (offset, SIZE))
        yield client.closed
        assert bytes(client.data) == resumeReply(offset, body) + resumeReply(SIZE, body) + b"#Bye.\r\n"
        assert sendfileCalls and sendfileCalls[0][0] == offset
        assert sum(count for _, count in sendfileCalls) >= SIZE - offset
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_resume_over_tls_sends_chunks(served, body, sendfileCalls):
    server = yield startServer(served, tls=True)
    try:
        client = yield loggedIn(server)
        client.transport.write(b"RESUME 1000003 big.bin\nQUIT\n")
        yield client.closed
        assert bytes(client.data) == resumeReply(1000003, body) + b"#Bye.\r\n"
        assert sendfileCalls == []
    finally:
        yield server.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest_twisted.inlineCallbacks
def test_file_shrinking_during_resume_closes_without_trailer(served, tls):
    path = served / "big.bin"
    path.write_bytes(b"y" * (64 * 1024 * 1024))
    server = yield startServer(served, tls=tls)
    try:
        client = yield loggedIn(server)
        client.transport.pauseProducing()
        client.transport.write(b"RESUME 1000 big.bin\nHELP\n")
        def sending():
            return [s._transfer for s in server.factory.sessions.sessions if s._transfer is not None and s._transfer.sent]

        while not sending():  # the body is flowing (and stalls: the client does not read)
            yield tick()
        os.truncate(path, 2 * 1024 * 1024)
        client.transport.resumeProducing()
        yield client.closed
        header = b"#Sending big.bin from byte 1000 (%d bytes).\r\n" % (64 * 1024 * 1024 - 1000)
        assert client.data.startswith(header)
        assert len(client.data) - len(header) < 64 * 1024 * 1024 - 1000
        assert b"sent successfully" not in client.data and b"#Commands" not in client.data
    finally:
        yield server.stop()
