"""LIST over real TCP: a client that stops reading a big listing holds back a bounded amount."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import reactor

from echofile.listing import ListingSender
from support import PASSWORD, makeFilesFactory
from loopbackhelpers import Server, deferLaterTick

ENTRIES = 10_000  # about 210 KB of listing


def unsent(transport) -> int:
    """Bytes in the Twisted transport's own write buffer (not yet taken by the socket)."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


@pytest_twisted.inlineCallbacks
def test_a_client_that_stops_reading_a_listing(served):
    big = served / "big"
    big.mkdir()
    for i in range(ENTRIES):
        (big / f"entry-{i:06d}.txt").write_bytes(b"")
    factory = makeFilesFactory(served, reactor)
    server = yield Server(factory).start()
    try:
        lister = yield server.connect()
        talker = yield server.connect()
        for client in (lister, talker):
            client.transport.write(b"AUTH " + PASSWORD.encode() + b"\r\n")
            yield client.until(lambda d: d.endswith(b"#You are logged in.\r\n"))
        lister.data.clear()
        # A small kernel send buffer (no autotuning), so that the socket fills long before the listing ends.
        for session in factory.sessions.sessions:
            session.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        lister.transport.pauseProducing()  # from now on the client reads nothing
        lister.transport.write(b"LIST big\r\n")
        # Wait until the listing stalls: the socket takes no more and the rest waits in the transport.
        last, still = None, 0
        for _ in range(20_000):  # a bound, so that a bug fails instead of hanging
            if still >= 20:
                break
            yield deferLaterTick()
            sessions = [s for s in factory.sessions.sessions if isinstance(s._transfer, ListingSender)]
            state = None
            if sessions:
                state = (sessions[0]._transfer._offset, unsent(sessions[0].transport))
            still = still + 1 if state is not None and state == last and state[1] > 0 else 0
            last = state
        assert still >= 20, f"the listing never stalled: {last}"
        sender = sessions[0]._transfer
        body = sender._listing.body
        assert unsent(sessions[0].transport) <= 2 * ListingSender.CHUNK_SIZE
        assert sender._offset < len(body)  # held back, not copied into buffers
        talker.transport.write(b"SAY while you were not reading\r\n")
        yield talker.until(lambda d: d.endswith(b"#Said.\r\n"))

        lister.transport.resumeProducing()
        header = f"#{ENTRIES} entries in big.\r\n".encode()
        event = b"*~guest2: while you were not reading\r\n"  # the second guest to log in
        received = yield lister.until(lambda d: len(d) >= len(header) + len(body) + len(event))
        assert bytes(received) == header + body + event  # the event after the last line, none inside
    finally:
        yield server.stop()
