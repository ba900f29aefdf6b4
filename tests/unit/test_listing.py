"""
LIST off the reactor thread, shared between sessions, streamed as the
client reads: on StringTransport with a fake thread pool and a task.Clock,
and on a socketpair for what a client that does not read costs.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echofile.files import HELP
from echofile.listing import Listing, ListingCache, ListingSender
from support import PASSWORD, FakeThreads, SocketTransportShell, connect, makeFilesFactory, replies


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def threads() -> FakeThreads:
    return FakeThreads()


def login(protocol, transport) -> None:
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport) == [b"#You are logged in."]


def session(factory):
    protocol, transport = connect(factory)
    replies(transport)
    login(protocol, transport)
    return protocol, transport


def bigFolder(served, count: int) -> list[bytes]:
    """A folder C{big} with C{count} empty files; the listing lines it should give."""
    big = served / "big"
    big.mkdir()
    for i in range(count):
        (big / f"entry-{i:06d}.txt").write_bytes(b"")
    return [f"0 entry-{i:06d}.txt".encode() for i in range(count)]


@pytest.fixture
def smallChunks(monkeypatch) -> int:
    """Chunks of 4 KiB, so that a folder of 1000 entries takes several."""
    monkeypatch.setattr(ListingSender, "CHUNK_SIZE", 4096)
    return 4096


def drain(transport: StringTransport) -> None:
    while isinstance(transport.producer, ListingSender):
        transport.producer.resumeProducing()


# -- off the reactor thread -----------------------------------------------------------------


def test_the_folder_is_read_in_the_thread_pool(served, clock, threads, monkeypatch):
    """Nothing is read on the calling thread; the session waits for the answer, pipelined commands too."""
    protocol, transport = session(makeFilesFactory(served, clock, runInThread=threads))
    scans = []
    realScandir = os.scandir

    def scandir(*args):
        scans.append(threading.current_thread().name)
        return realScandir(*args)

    monkeypatch.setattr(os, "scandir", scandir)
    protocol.dataReceived(b"LIST docs\r\nHELP\r\n")
    assert replies(transport) == []  # neither the listing nor the HELP behind it
    assert scans == [] and len(threads.pending) == 1
    threads.runAll()
    assert scans == threads.threads  # the read ran as the pool's work, not before
    assert replies(transport) == [b"#1 entries in docs.", b"9 readme.txt", HELP.encode()]


def test_a_folder_that_vanishes_before_the_read(served, clock, threads):
    protocol, transport = session(makeFilesFactory(served, clock, runInThread=threads))
    (served / "gone").mkdir()
    protocol.dataReceived(b"LIST gone\r\n")
    os.rmdir(served / "gone")
    threads.runAll()
    # Read through the open handle: an empty folder (removed meanwhile), not an error or a traceback.
    assert replies(transport) == [b"#0 entries in gone."]


def test_the_session_left_before_the_read_finished(served, clock, threads):
    protocol, transport = session(makeFilesFactory(served, clock, runInThread=threads))
    protocol.dataReceived(b"LIST docs\r\n")
    transport.loseConnection()
    protocol.connectionLost(None)
    threads.runAll()
    assert transport.value() == b""


# -- one copy per unchanged folder ---------------------------------------------------------------


def test_sessions_listing_the_same_folder_share_one_read_and_one_copy(served, clock, threads):
    factory = makeFilesFactory(served, clock, runInThread=threads)
    sessions = [session(factory) for _ in range(5)]
    for protocol, _ in sessions:
        protocol.dataReceived(b"LIST docs\r\n")
    assert len(threads.pending) == 1  # one read in flight, four waiting for it
    threads.runAll()
    for _, transport in sessions:
        assert replies(transport) == [b"#1 entries in docs.", b"9 readme.txt"]
    # Asked again (by another name for the same folder): the kept copy, no new read.
    protocol, transport = sessions[0]
    protocol.dataReceived(b"LIST /docs/\r\n")
    assert threads.pending == []
    assert replies(transport) == [b"#1 entries in /docs/.", b"9 readme.txt"]


def test_a_changed_folder_is_read_again(served, clock, threads):
    protocol, transport = session(makeFilesFactory(served, clock, runInThread=threads))
    protocol.dataReceived(b"LIST docs\r\n")
    threads.runAll()
    replies(transport)
    (served / "docs" / "new.txt").write_bytes(b"12345")
    info = os.stat(served / "docs")
    os.utime(served / "docs", ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))  # a clock tick, for sure
    protocol.dataReceived(b"LIST docs\r\n")
    assert len(threads.pending) == 1
    threads.runAll()
    assert replies(transport) == [b"#2 entries in docs.", b"5 new.txt", b"9 readme.txt"]


def test_a_listing_is_kept_only_for_a_short_time(served, clock, threads):
    """Sizes change without touching the folder: a kept listing is at most maxAge old."""
    factory = makeFilesFactory(served, clock, runInThread=threads)
    protocol, transport = session(factory)
    cache = protocol.avatar.tree.listings
    protocol.dataReceived(b"LIST docs\r\n")
    threads.runAll()
    replies(transport)
    assert len(cache) == 1
    (served / "docs" / "readme.txt").write_bytes(b"longer now\n")
    clock.advance(cache.maxAge)
    assert len(cache) == 0  # dropped when its time is up, not at the next LIST
    protocol.dataReceived(b"LIST docs\r\n")
    threads.runAll()
    assert replies(transport) == [b"#1 entries in docs.", b"11 readme.txt"]


def test_the_cache_is_bounded():
    clock = Clock()
    cache = ListingCache(clock, maxKept=3, maxKeptBytes=100)
    for i in range(10):
        assert cache.shared((0, i, 0)) is None
        cache.reading((0, i, 0), succeed(Listing(1, b"- x/\r\n")))
    assert len(cache) == 3 and cache.shared((0, 9, 0)) is not None and cache.shared((0, 0, 0)) is None
    cache.reading((1, 0, 0), succeed(Listing(1, b"x" * 101)))  # over the byte bound: not kept at all
    assert cache.shared((1, 0, 0)) is None
    cache.reading((1, 1, 0), succeed(Listing(1, b"y" * 60)))
    cache.reading((1, 2, 0), succeed(Listing(1, b"z" * 60)))  # together over the bound: the older goes
    assert cache.shared((1, 1, 0)) is None and cache.shared((1, 2, 0)) is not None
    clock.advance(cache.maxAge)
    assert len(cache) == 0 and clock.getDelayedCalls() == []


def test_a_failed_read_fails_every_waiter_and_is_not_kept(served, clock, threads, monkeypatch):
    factory = makeFilesFactory(served, clock, runInThread=threads)
    first, second = session(factory), session(factory)
    first[0].dataReceived(b"LIST docs\r\n")
    second[0].dataReceived(b"LIST docs\r\n")

    def broken(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "scandir", broken)
    threads.runAll()
    for _, transport in (first, second):
        assert replies(transport) == [b"!Directory docs could not be opened."]
    assert len(first[0].avatar.tree.listings) == 0


# -- streamed as the client reads -------------------------------------------------------------------


def test_a_big_listing_is_streamed_in_chunks(served, clock, threads, smallChunks):
    expected = bigFolder(served, 1000)
    protocol, transport = session(makeFilesFactory(served, clock, runInThread=threads))
    protocol.dataReceived(b"LIST big\r\nHELP\r\n")
    threads.runAll()
    first = len(transport.value())
    assert first <= len(b"#1000 entries in big.\r\n") + smallChunks  # not all of it at once
    assert isinstance(transport.producer, ListingSender)
    drain(transport)
    assert replies(transport) == [b"#1000 entries in big.", *expected, HELP.encode()]
    assert transport.producer is protocol  # the session reads commands again


def test_no_event_between_the_header_and_the_last_line(served, clock, threads, smallChunks):
    bigFolder(served, 1000)
    factory = makeFilesFactory(served, clock, runInThread=threads)
    protocol, transport = session(factory)
    other, otherTransport = session(factory)
    protocol.dataReceived(b"LIST big\r\n")
    other.dataReceived(b"SAY before the read\r\n")  # while the folder is read: may come before the header
    threads.runAll()
    transport.producer.resumeProducing()
    other.dataReceived(b"SAY in the middle\r\n")
    drain(transport)
    lines = replies(transport)
    header = lines.index(b"#1000 entries in big.")
    assert [line for line in lines[header : header + 1001] if line.startswith(b"*")] == []
    assert lines[header + 1001 :] == [b"*~guest2: in the middle"]  # the second guest to log in


def test_idle_timer_runs_while_the_listing_moves_and_cuts_a_stalled_one(served, clock, threads, smallChunks):
    bigFolder(served, 1000)
    protocol, transport = session(makeFilesFactory(served, clock, runInThread=threads, idleTimeout=10))
    protocol.dataReceived(b"LIST big\r\n")
    threads.runAll()
    for _ in range(3):
        clock.advance(6)
        transport.producer.resumeProducing()  # moving: activity
    assert not transport.disconnecting
    clock.advance(10)  # stalled: cut off, nothing said inside the listing
    assert transport.disconnecting
    assert b"!Idle timeout." not in transport.value()


def test_shutdown_waits_for_the_listing(served, clock, threads, smallChunks):
    expected = bigFolder(served, 1000)
    protocol, transport = session(makeFilesFactory(served, clock, runInThread=threads))
    protocol.dataReceived(b"LIST big\r\n")
    threads.runAll()
    protocol.shutdown()
    drain(transport)
    assert replies(transport) == [b"#1000 entries in big.", *expected, b"!Server shutting down."]


def test_a_client_that_does_not_read_holds_back_at_most_two_chunks():
    """
    A socketpair whose reader never reads, and Twisted's own write buffer:
    once the socket is full, the transport's buffer holds at most two
    chunks, however big the listing.
    """
    listing = Listing(100_000, b"0 entry-000000.txt\r\n" * 100_000)  # 2 MB
    server, client = socket.socketpair()
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        server.setblocking(False)
        transport = SocketTransportShell(server)
        sender = ListingSender(b"#100000 entries in big.\r\n", listing)
        done = []
        sender.beginSending(transport).addBoth(done.append)
        while True:  # what the reactor does while the socket is writable
            before = transport.offset, len(transport.dataBuffer), transport._tempDataLen
            transport.doWrite()
            if (transport.offset, len(transport.dataBuffer), transport._tempDataLen) == before:
                break  # the socket takes nothing more
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        inSocket = sender._offset - buffered
        assert done == []
        assert 0 < buffered <= 2 * ListingSender.CHUNK_SIZE
        assert sender._offset < len(listing.body) // 4  # the rest was never even copied
        # And the client gets all of it, in order, once it reads.
        received = bytearray()
        while not done:
            received += client.recv(1 << 20)
            transport.doWrite()
        transport.doWrite()
        client.setblocking(False)
        try:
            while True:
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
        except BlockingIOError:
            pass
        assert inSocket > 0
        assert bytes(received) == b"#100000 entries in big.\r\n" + listing.body
