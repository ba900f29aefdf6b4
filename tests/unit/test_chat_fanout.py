"""
Chat fan-out at the mechanism: one encoding per round, one send per
receiver straight into a plain TCP socket whose buffer is empty, and
Twisted's buffer (with its backpressure) for everything else.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import Logger
from zope.interface import implementer

from echofile.chat import IChatListener, deliver
from support import PASSWORD, SocketTransportShell, makeFilesFactory


class Shell(SocketTransportShell):
    """Twisted's tcp.Server buffer over a socketpair; reading is never really paused or resumed (no reactor)."""

    def startReading(self) -> None:
        pass


def _recvAll(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    return data


@pytest.fixture
def sessions(served):
    """Three guest sessions on Twisted transports over socketpairs; yields (factory, [(session, transport, peer)])."""
    factory = makeFilesFactory(served, Clock())
    made, sockets = [], []
    for port in (1, 2, 3):
        ours, theirs = socket.socketpair()
        sockets += [ours, theirs]
        ours.setblocking(False)
        theirs.setblocking(False)
        transport = Shell(ours)
        session = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        session.makeConnection(transport)
        session.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
        # Replies, too, go straight into an idle socket: the greeting and the login's answer are there.
        assert _recvAll(theirs) == b"#Server Ready.\r\n#You are logged in.\r\n"
        assert transport._tempDataBuffer == []
        made.append((session, transport, theirs))
    yield factory, made
    for sock in sockets:
        sock.close()


def test_an_event_goes_straight_into_an_idle_socket(sessions):
    """No write buffer, no startWriting (an epoll_ctl and a reactor turn per receiver): one send."""
    factory, [(alice, _, _), (bob, bobT, bobPeer), (carol, carolT, carolPeer)] = sessions
    writing = bobT.writing, carolT.writing
    factory.chat.say(alice, "hello")
    assert _recvAll(bobPeer) == b"*~guest1: hello\r\n"
    assert _recvAll(carolPeer) == b"*~guest1: hello\r\n"
    assert (bobT.writing, carolT.writing) == writing
    assert bobT._tempDataLen == carolT._tempDataLen == 0


def test_an_event_waits_behind_buffered_bytes(sessions):
    """Bytes already in the transport's buffer go first: the event is buffered behind them, not sent past them."""
    factory, [(alice, _, _), (bob, bobT, bobPeer), _] = sessions
    bobT.write(b"#A reply still buffered.\r\n")  # as a reply that met a full socket would be
    factory.chat.say(alice, "after it")
    assert _recvAll(bobPeer) == b""
    assert b"".join(bobT._tempDataBuffer) == b"#A reply still buffered.\r\n*~guest1: after it\r\n"
    bobT.doWrite()
    assert _recvAll(bobPeer) == b"#A reply still buffered.\r\n*~guest1: after it\r\n"


def test_what_a_full_socket_does_not_take_is_buffered_then_bounded(sessions):
    """
    A receiver that does not read: the socket fills, the rest goes to
    Twisted's buffer, which pauses the session; further events wait in its
    bounded queue, and all of it arrives in order once the client reads.
    """
    factory, [(alice, _, _), (bob, bobT, bobPeer), _] = sessions
    bobT.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for i in range(2000):
        factory.chat.say(alice, f"line {i:04} " + "x" * 200)
    assert "output" in bob._holds
    assert bobT._tempDataLen + len(bobT.dataBuffer) - bobT.offset <= bobT.bufferSize + 300
    assert 0 < len(bob._events) <= 100
    received = b""
    while "output" in bob._holds or bobT._tempDataLen or bobT.offset < len(bobT.dataBuffer):
        received += _recvAll(bobPeer)
        bobT.doWrite()  # the reactor's turn: buffer drained, then the producer resumed
    received += _recvAll(bobPeer)
    lines = received.split(b"\r\n")[:-1]
    numbers = [int(line.split()[2]) for line in lines if line.startswith(b"*~guest1: line ")]
    assert numbers == sorted(numbers) and numbers[0] == 0 and numbers[-1] == 1999
    notice = [line for line in lines if b"events dropped" in line]
    assert len(notice) == 1 and int(notice[0].split()[1]) == 2000 - len(numbers)


def test_a_closing_transport_takes_the_buffer_path(sessions):
    """A pending half-close: nothing is sent past it (the transport drops what comes after)."""
    factory, [(alice, _, _), (bob, bobT, bobPeer), _] = sessions
    bobT._writeDisconnecting = True
    factory.chat.say(alice, "too late")
    assert _recvAll(bobPeer) == b""


def test_a_round_is_encoded_once():
    """deliver hands every receiver the same bytes: one encoding per round, not one per receiver."""
    got: list[tuple[str, bytes | None]] = []

    @implementer(IChatListener)
    class Receiver:
        def deliverEvent(self, line: str, data: bytes | None = None) -> None:
            got.append((line, data))

    deliver("*alice: h\u00e9llo", [Receiver() for _ in range(3)], Logger())
    assert [line for line, _ in got] == ["*alice: h\u00e9llo"] * 3
    assert got[0][1] == "*alice: h\u00e9llo\r\n".encode("utf-8")
    assert all(data is got[0][1] for _, data in got)
