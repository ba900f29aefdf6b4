"""Shared test helpers: a served folder, factories on a fake clock, in-memory sessions."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from twisted.internet import tcp
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echofile.auth import makePortal
from echofile.chat import ChatService
from echofile.files import FilesFactory
from echofile.hashing import FileHasher
from echofile.limits import ConnectionLimiter
from echofile.share import Tree
from echofile.transfer import BodySender

PASSWORD = "correct horse"


def populate(root: Path) -> Path:
    """A small served tree: files, a folder, binary content."""
    (root / "notes.txt").write_bytes(b"hello notes\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_bytes(b"read me\r\n")
    (root / "with space.txt").write_bytes(b"spaced")
    return root


def runHere(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """A synchronous stand-in for deferToThread: runs C{f} at once, on this thread."""
    return maybeDeferred(f, *args, **kwargs)


def makeTree(root: Path | str, clock: Any, runInThread: Callable[..., Deferred[Any]] | None = None,
             dotfiles: bool = False) -> Tree:
    """
    The served tree: on a real reactor with its thread pool (loopback
    tests), on a fake clock with C{runInThread} (default: L{runHere}).
    """
    if runInThread is None and not hasattr(clock, "getThreadPool"):
        runInThread = runHere
    return Tree(os.fspath(root), dotfiles=dotfiles, runInThread=runInThread, clock=clock)


def makeFilesFactory(
    root: Path | str,
    clock: Clock | None = None,
    checkers: list | None = None,
    **kwargs,
) -> FilesFactory:
    clock = clock or Clock()
    limiter = ConnectionLimiter(kwargs.pop("maxConnections", 1000), kwargs.pop("maxPerAddress", 50), "files", clock=clock)
    chat = kwargs.pop("chat", None) or ChatService()
    tree = makeTree(root, clock, kwargs.pop("runInThread", None), kwargs.pop("dotfiles", False))
    kwargs.setdefault("hashes", FileHasher(FakeThreads(synchronous=True)))
    return FilesFactory(makePortal(tree, PASSWORD, checkers or [], chat), clock, limiter, chat, **kwargs)


def connect(factory: FilesFactory, host: str = "127.0.0.1", port: int = 40000):
    """Build a session on a StringTransport, as Twisted would on accept."""
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def loggedIn(factory, user: str, port: int = 1):
    """A session of C{user} ('guest' with the guest password, others with 'pw'), its greeting and login read."""
    protocol, transport = connect(factory, port=port)
    if user == "guest":
        protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    else:
        protocol.dataReceived(f"USER {user}\r\nAUTH pw\r\n".encode())
    assert replies(transport)[-1] == b"#You are logged in."
    return protocol, transport


def drainTransfer(transport: StringTransport) -> None:
    """Pump a registered BodySender until the body is done (what the reactor would do)."""
    while isinstance(transport.producer, BodySender):
        transport.producer.resumeProducing()


def replies(transport: StringTransport) -> list[bytes]:
    """Everything written so far, split into CRLF-terminated lines, and cleared."""
    data = transport.value()
    transport.clear()
    assert data == b"" or data.endswith(b"\r\n"), data
    return data.split(b"\r\n")[:-1]


class SocketTransportShell(tcp.Server):
    """
    A tcp.Server shell around one end of a socketpair: Twisted's own write
    buffer and producer bookkeeping without a reactor; calls to
    C{startWriting} are counted instead of reaching one.
    """

    def __init__(self, sock: socket.socket) -> None:  # no super().__init__: no reactor
        self.socket = sock
        self.fileno = sock.fileno
        self._tempDataBuffer = []
        self._tempDataLen = 0
        self.dataBuffer = b""
        self.offset = 0
        self.connected = 1
        self.writing = 0

    def startWriting(self) -> None:
        self.writing += 1

    def stopWriting(self) -> None:
        pass

    def stopReading(self) -> None:
        pass

    def getPeer(self):
        return IPv4Address("TCP", "127.0.0.1", 2)


class FakeThreads:
    """
    A stand-in for C{deferToThread} / the reactor's thread pool: a job runs at
    once (C{synchronous}) or when the test says so (L{runNext}, L{runAll}),
    on the test's own thread; C{threads} records the thread each job ran on.
    """

    def __init__(self, synchronous: bool = False) -> None:
        self.synchronous = synchronous
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self.threads: list[str] = []
        self.calls = 0

    def __call__(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.calls += 1
        d: Deferred[Any] = Deferred()
        if self.synchronous:
            self._run(function, args, d)
        else:
            self.pending.append((function, args, d))
        return d

    def runNext(self) -> None:
        function, args, d = self.pending.pop(0)
        self._run(function, args, d)

    def runAll(self) -> None:
        while self.pending:
            self.runNext()

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...], d: Deferred[Any]) -> None:
        self.threads.append(threading.current_thread().name)
        maybeDeferred(function, *args).chainDeferred(d)


class HalfCloseTransport(StringTransport):
    """
    A StringTransport that also records a half-close (``loseWriteConnection``,
    as TCP and UNIX sockets have): C{writeDisconnecting} instead of
    C{disconnecting}, and what is written afterwards is dropped, as Twisted does.
    """

    writeDisconnecting = False

    def loseWriteConnection(self) -> None:
        self.writeDisconnecting = True

    def write(self, data: bytes) -> None:
        if not self.writeDisconnecting:
            super().write(data)


def connectHalfClosing(factory, host: str = "127.0.0.1", port: int = 40000):
    """L{connect}, on a L{HalfCloseTransport}."""
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = HalfCloseTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport
