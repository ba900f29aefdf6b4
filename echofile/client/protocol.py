"""
The client side of the file protocol, usable as a library.

Like the calculus client of Twisted's trial howto, L{FileClient} keeps a FIFO
of pending requests, one L{Deferred} each: a command is written at once (the
server answers in command order), and each reply line goes to the request at
the head of the queue.  File bodies are read by their announced size, in raw
mode, so a body that contains reply-like lines comes through untouched.

Lines starting with ``*`` (chat events) may arrive between replies; they are
handed to C{onEvent} and never taken for a reply.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

GREETING = "#Server Ready."

_SENDING = re.compile(r"#Sending (.*) \(([0-9]+) bytes\)\.")
_ENTRIES = re.compile(r"#([0-9]+) entries in (.*)\.")
_ENTRY = re.compile(r"([0-9]+|-) (.+)")
_USERS = re.compile(r"#([0-9]+) users? online\.")


class ClientError(Exception):
    """Base of everything a request can fail with."""


class ServerError(ClientError):
    """
    The server answered with an error line.

    @ivar reply: the reply text without its leading ``!``.
    """

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class ConnectionClosed(ClientError):
    """
    The connection ended before the reply arrived.

    @ivar serverSaid: the server's last unsolicited error line (such as
        ``Idle timeout.``), which usually explains why, or C{None}.
    """

    def __init__(self, message: str, serverSaid: str | None = None) -> None:
        if serverSaid:
            message = f"{message} (server said: {serverSaid})"
        super().__init__(message)
        self.serverSaid = serverSaid


def describeTLSError(reason: Failure | None) -> str | None:
    """
    A readable reason if the connection died of a TLS error (an untrusted or
    wrong-name certificate, a failed handshake), else None.

    pyOpenSSL's errors carry a list of (library, function, reason) tuples;
    the reasons are what a user needs ("certificate verify failed").
    """
    if reason is None or not type(reason.value).__module__.startswith("OpenSSL"):
        return None
    details = reason.value.args[0] if reason.value.args else None
    if isinstance(details, list):
        reasons = [entry[-1] for entry in details if isinstance(entry, tuple) and entry and entry[-1]]
        if reasons:
            return ", ".join(reasons)
    return reason.getErrorMessage()


class TransferIncomplete(ConnectionClosed):
    """The connection ended inside a file body: what arrived is not the file."""

    def __init__(self, received: int, size: int, serverSaid: str | None = None) -> None:
        super().__init__(f"connection lost after {received} of {size} bytes", serverSaid)
        self.received = received
        self.size = size


class ReplyTimeout(ClientError):
    """No reply and no progress within the timeout; the connection was dropped."""


class ProtocolViolation(ClientError):
    """The server said something this client cannot make sense of; the connection was dropped."""


class FileSink(typing.Protocol):
    """Where L{FileClient.get} puts a body: told its size first, then given it chunk by chunk."""

    def begin(self, size: int) -> None: ...

    def write(self, data: bytes) -> None: ...


class MemorySink:
    """A L{FileSink} that keeps the body in memory (small files, tests)."""

    def __init__(self) -> None:
        self.size: int | None = None
        self.chunks: list[bytes] = []

    def begin(self, size: int) -> None:
        self.size = size

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    @property
    def value(self) -> bytes:
        return b"".join(self.chunks)


@dataclass(frozen=True)
class Entry:
    """One line of a listing; C{size} is C{None} for a folder (whose name has no trailing ``/``)."""

    name: str
    size: int | None

    @property
    def isDirectory(self) -> bool:
        return self.size is None


class _Request:
    """
    One pending command.  Subclasses read their reply lines (and bytes);
    C{done} is set when the reply is complete.
    """

    #: True while the next line would be the start of a reply (where ``*`` events may come).
    atReplyStart = True

    def __init__(self) -> None:
        self.deferred: Deferred = Deferred()
        self.done = False
        self.result: object = None

    def lineReceived(self, client: "FileClient", line: str) -> None:
        raise NotImplementedError()

    def rawDataReceived(self, client: "FileClient", data: bytes) -> bytes | None:
        raise ProtocolViolation("unexpected raw data")

    def connectionLost(self, serverSaid: str | None) -> Failure:
        return Failure(ConnectionClosed("connection closed before the reply arrived", serverSaid))

    def _finish(self, result: object) -> None:
        """Complete; the client fires C{deferred} once this request left the queue."""
        self.done = True
        self.result = result

    def _error(self, line: str) -> None:
        """An error reply, or a line that is no reply at all."""
        if line.startswith("!"):
            self._finish(Failure(ServerError(line[1:])))
        else:
            raise ProtocolViolation(f"unexpected reply: {line!r}")


class _SimpleRequest(_Request):
    """A command answered by one line; fires with the reply text (without ``#``)."""

    def __init__(self, expect: str | None = None) -> None:
        super().__init__()
        self._expect = expect

    def lineReceived(self, client: "FileClient", line: str) -> None:
        if line.startswith("#") and (self._expect is None or line == self._expect):
            self._finish(line[1:])
        else:
            self._error(line)


class _LoginRequest(_Request):
    """
    ``USER name`` then, only once that was accepted, ``AUTH password``.

    AUTH must not be pipelined behind USER: if USER were refused, the AUTH would
    log in to the default account.  Commands queued meanwhile are held back
    (L{FileClient._holdOutput}) so the server sees them after AUTH.
    """

    def __init__(self, password: str) -> None:
        super().__init__()
        self._password = password
        self._stage = "USER"

    def lineReceived(self, client: "FileClient", line: str) -> None:
        if self._stage == "USER" and line.startswith("#"):
            self._stage = "AUTH"
            client._sendNow("AUTH " + self._password)
            return
        client._releaseOutput()
        if line.startswith("#"):
            self._finish(line[1:])
        else:
            self._error(line)

    def connectionLost(self, serverSaid: str | None) -> Failure:
        return Failure(ConnectionClosed(f"connection closed before the {self._stage} reply arrived", serverSaid))


class _CountedRequest(_Request):
    """
    A reply made of a header that announces a count, then that many lines
    (``LIST``, ``WHO``); fires with the parsed items once all arrived.
    """

    header: re.Pattern[str]

    def __init__(self) -> None:
        super().__init__()
        self._remaining: int | None = None
        self._items: list[object] = []

    def parseItem(self, line: str) -> object:
        raise NotImplementedError()

    def lineReceived(self, client: "FileClient", line: str) -> None:
        if self._remaining is None:
            header = self.header.fullmatch(line)
            if header is None:
                self._error(line)
                return
            self._remaining = int(header.group(1))
            self.atReplyStart = False
        else:
            self._items.append(self.parseItem(line))
            self._remaining -= 1
        if self._remaining == 0:
            self._finish(self._items)


class _ListRequest(_CountedRequest):
    """``LIST``: a header with a count, then that many entry lines; fires with a list of L{Entry}."""

    header = _ENTRIES

    def parseItem(self, line: str) -> Entry:
        entry = _ENTRY.fullmatch(line)
        if entry is None:
            raise ProtocolViolation(f"unexpected listing line: {line!r}")
        size, name = entry.groups()
        if size == "-":
            return Entry(name.rstrip("/"), None)
        return Entry(name, int(size))


class _WhoRequest(_CountedRequest):
    """``WHO``: a header with a count, then that many user names; fires with the list."""

    header = _USERS

    def parseItem(self, line: str) -> str:
        return line

class _FileRequest(_Request):
    """
    ``FILE name``: header, exactly I{size} raw bytes, CR LF, trailer.

    Fires with the size once the trailer arrived.  If the sink fails (disk
    full) the body is still read to its end, so the session stays usable, and
    the request fails with the sink's error.
    """

    def __init__(self, sink: FileSink) -> None:
        super().__init__()
        self._sink = sink
        self._size = 0
        self._remaining = 0
        self._tail = b""  # collects the CR LF after the body
        self._stage = "header"
        self._sinkFailure: Failure | None = None

    def lineReceived(self, client: "FileClient", line: str) -> None:
        if self._stage == "header":
            header = _SENDING.fullmatch(line)
            if header is None:
                self._error(line)
                return
            self._size = self._remaining = int(header.group(2))
            self.atReplyStart = False
            self._stage = "body"
            self._toSink(self._sink.begin, self._size)
            client.setRawMode()
        elif self._stage == "trailer":
            if not line.startswith("#"):
                raise ProtocolViolation(f"unexpected line after a file body: {line!r}")
            self._finish(self._sinkFailure if self._sinkFailure is not None else self._size)
        else:
            raise ProtocolViolation(f"line in {self._stage} stage")

    def rawDataReceived(self, client: "FileClient", data: bytes) -> bytes | None:
        if self._remaining:
            chunk, data = data[: self._remaining], data[self._remaining :]
            self._remaining -= len(chunk)
            self._toSink(self._sink.write, chunk)
            if self._remaining:
                return None
        need = 2 - len(self._tail)
        self._tail += data[:need]
        data = data[need:]
        if len(self._tail) < 2:
            return None
        if self._tail != b"\r\n":
            raise ProtocolViolation(f"file body not followed by CR LF but {self._tail!r}")
        self._stage = "trailer"
        return data

    def _toSink(self, method: Callable, argument: object) -> None:
        if self._sinkFailure is None:
            try:
                method(argument)
            except Exception:
                self._sinkFailure = Failure()

    def connectionLost(self, serverSaid: str | None) -> Failure:
        if self._stage == "body":
            return Failure(TransferIncomplete(self._size - self._remaining, self._size, serverSaid))
        return super().connectionLost(serverSaid)


class FileClient(LineReceiver, TimeoutMixin):
    """
    A connection to the file service.

    Every public method writes its command at once and returns a L{Deferred}
    for its reply; they may be called before the greeting arrived.

    @param clock: runs the reply timeout (the reactor, or a L{task.Clock} in tests).
    @param timeout: seconds without any reply or progress while a request is
        pending before every pending request fails with L{ReplyTimeout} and
        the connection is dropped; C{None} waits forever.
    @param onEvent: called with each ``*`` event line (without the ``*``);
        a public attribute, so a program may replace it once connected.
    """

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024
    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float | None = None,
        onEvent: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self.onEvent = onEvent
        self._held: list[str] | None = None  # lines queued behind a USER awaiting its reply
        self._serverSaid: str | None = None
        self._disconnected = False
        self._closeWaiters: list[Deferred[None]] = []
        # The greeting is the reply to a request nobody sent: the first in the queue.
        self._greeting: Failure | None = None
        self._greetingDone = False
        self._readyWaiters: list[Deferred[None]] = []
        greeting = _SimpleRequest(expect=GREETING)
        greeting.deferred.addBoth(self._greeted)
        self._pending: list[_Request] = [greeting]

    # -- life cycle ----------------------------------------------------------

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's hook, bound to our injected clock."""
        return self._clock.callLater(period, func)

    def connectionMade(self) -> None:
        self.setTimeout(self._timeout)

    def _greeted(self, result: object) -> None:
        self._greetingDone = True
        self._greeting = result if isinstance(result, Failure) else None
        if self._greeting is not None and self._greeting.check(ServerError):
            self._serverSaid = self._greeting.value.reply  # "busy": why the connection will close
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            self._fireReady(d)

    def _fireReady(self, d: Deferred[None]) -> None:
        if self._greeting is None:
            d.callback(None)
        else:
            d.errback(self._greeting)

    def whenReady(self) -> Deferred[None]:
        """Fires once the server greeted us; fails if it refused (busy) or went away."""
        d: Deferred[None] = Deferred()
        if self._greetingDone:
            self._fireReady(d)
        else:
            self._readyWaiters.append(d)
        return d

    @property
    def serverSaid(self) -> str | None:
        """The server's last unsolicited error line (``Idle timeout.``, ...), which explains a close."""
        return self._serverSaid

    def whenDisconnected(self) -> Deferred[None]:
        """Fires once the connection is closed, however that happened."""
        d: Deferred[None] = Deferred()
        if self._disconnected:
            d.callback(None)
        else:
            self._closeWaiters.append(d)
        return d

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._disconnected = True
        self.setTimeout(None)
        tlsError = describeTLSError(reason)

        def failed(request: _Request) -> Failure:
            if tlsError is not None:  # the real reason, rather than "closed before the reply"
                return Failure(ConnectionClosed(f"TLS failed: {tlsError}"))
            return request.connectionLost(self._serverSaid)

        self._failAll(failed)
        waiters, self._closeWaiters = self._closeWaiters, []
        for d in waiters:
            d.callback(None)

    def timeoutConnection(self) -> None:
        self._log.info("no reply for {timeout} seconds, dropping the connection", timeout=self._timeout)
        self._failAll(lambda request: Failure(ReplyTimeout(f"no reply from the server for {self._timeout:g} s")))
        self.transport.abortConnection()

    def _failAll(self, why: Callable[[_Request], Failure]) -> None:
        pending, self._pending = self._pending, []
        for request in pending:
            request.done = True
            request.deferred.errback(why(request))

    # -- requests ------------------------------------------------------------

    def login(self, password: str, user: str | None = None) -> Deferred[str]:
        """Log in: the default account without C{user}, else C{user}'s.  Fires with the reply text."""
        _checkArgument(password)
        if user is None:
            return self._request(_SimpleRequest(), "AUTH " + password)
        _checkArgument(user)
        d = self._request(_LoginRequest(password), "USER " + user)
        self._holdOutput()
        return d

    def get(self, name: str, sink: FileSink) -> Deferred[int]:
        """Fetch C{name} into C{sink}; fires with its size once the whole body and the trailer came."""
        _checkArgument(name)
        return self._request(_FileRequest(sink), "FILE " + name)

    def list(self, directory: str | None = None) -> Deferred[list[Entry]]:
        """List a folder (the root without C{directory}); fires with a list of L{Entry}."""
        if directory:
            _checkArgument(directory)
            return self._request(_ListRequest(), "LIST " + directory)
        return self._request(_ListRequest(), "LIST")

    def say(self, text: str) -> Deferred[str]:
        """Say C{text} to every other logged-in session."""
        _checkArgument(text)
        return self._request(_SimpleRequest(), "SAY " + text)

    def msg(self, user: str, text: str) -> Deferred[str]:
        """Say C{text} to C{user} only."""
        _checkArgument(user)
        _checkArgument(text)
        return self._request(_SimpleRequest(), f"MSG {user} {text}")

    def who(self) -> Deferred[list[str]]:
        """Who is logged in; fires with the sorted user names."""
        return self._request(_WhoRequest(), "WHO")

    def quit(self) -> Deferred[str]:
        """Say goodbye; the server closes the connection after its reply."""
        return self._request(_SimpleRequest(expect="#Bye."), "QUIT")

    def _request(self, request: _Request, line: str) -> Deferred:
        if self._disconnected:
            request.deferred.errback(ConnectionClosed("not connected", self._serverSaid))
            return request.deferred
        self._pending.append(request)
        if self._held is not None:
            self._held.append(line)
        else:
            self._sendNow(line)
        if len(self._pending) == 1:
            self.setTimeout(self._timeout)
        return request.deferred

    def _sendNow(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def _holdOutput(self) -> None:
        if self._held is None:
            self._held = []

    def _releaseOutput(self) -> None:
        held, self._held = self._held, None
        for line in held or []:
            self._sendNow(line)

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        try:
            super().dataReceived(data)
        except ProtocolViolation:
            self._violated(Failure())

    def lineReceived(self, line: bytes) -> None:
        text = line.removesuffix(b"\r").decode("utf-8", errors="replace")
        head = self._pending[0] if self._pending else None
        if text.startswith("*") and (head is None or head.atReplyStart):
            self._log.debug("event: {event}", event=text[1:])
            if self.onEvent is not None:
                self.onEvent(text[1:])
            return
        if head is None:
            if text.startswith("!"):
                self._serverSaid = text[1:]
                self._log.info("server: {reply}", reply=text)
            elif text:
                self._log.warn("unsolicited reply ignored: {reply!r}", reply=text)
            return
        head.lineReceived(self, text)
        self._afterInput(head)

    def rawDataReceived(self, data: bytes) -> None:
        head = self._pending[0]
        rest = head.rawDataReceived(self, data)
        if rest is not None:
            self._afterInput(head)
            self.setLineMode(rest)

    def _afterInput(self, head: _Request) -> None:
        """Retire a completed head request first, then fire it: its callbacks may queue more."""
        if head.done and self._pending and self._pending[0] is head:
            self._pending.pop(0)
            if not self._pending:
                self.setTimeout(None)
            if isinstance(head.result, Failure):
                head.deferred.errback(head.result)
            else:
                head.deferred.callback(head.result)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._violated(Failure(ProtocolViolation(f"reply line longer than {self.MAX_LENGTH} bytes")))

    def _violated(self, failure: Failure) -> None:
        self._log.warn("protocol violation: {error}", error=failure.value)
        self._failAll(lambda request: failure)
        self.transport.abortConnection()


def _checkArgument(text: str) -> None:
    """A command argument must stay on its line, or it would become another command."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"line breaks are not allowed in a command argument: {text!r}")
