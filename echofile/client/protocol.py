"""
The client side of the file protocol, usable as a library.

Like the calculus client of Twisted's trial howto, L{FileClient} keeps a FIFO
of pending requests, one L{Deferred} each: a command is written at once (the
server answers in command order), and each reply line goes to the reader
(L{echofile.client.replies}) at the head of the queue.  File bodies are read
by their announced size, in raw mode, so a body that contains reply-like
lines comes through untouched.

Lines starting with ``*`` (chat events) may arrive between replies; they are
handed to C{onEvent} and never taken for a reply.

The server is not trusted: reply lines, listings and user lists are bounded
(L{MAX_LINE}, C{maxEntries}), sizes and counts must be sane numbers, and a
body whose sink failed is not read for nothing beyond a bound.  Text from the
server is handed over as it came: whoever shows it runs it through
L{echofile.text.sanitize}.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from echofile import wire
from echofile.client.errors import ClientError, ConnectionClosed, ProtocolViolation, ReplyTimeout, ServerError
from echofile.client.errors import describeTLSError
from echofile.client.replies import FileReader, Reader, SimpleReader
from echofile.client.requests import Requests
from echofile.text import sanitize
from echofile.waiters import Waiters

GREETING = wire.GREETING

#: The longest reply line accepted: a name of the server's 4096-byte line
#: limit in a reply, with room to spare.  Longer is a protocol violation.
MAX_LINE = 16 * 1024

#: The most entries (or users) a LIST (or WHO) reply may announce.
MAX_ENTRIES = 1_000_000


class _Channel:
    """The narrow L{echofile.client.replies.Channel} a reader gets: three things, not the whole client."""

    def __init__(self, client: "FileClient") -> None:
        self._client = client

    def sendLine(self, line: str) -> None:
        self._client._sendNow(line)

    def releaseHeld(self) -> None:
        self._client._releaseOutput()

    def readRaw(self) -> None:
        self._client.setRawMode()


class FileClient(Requests, LineReceiver, TimeoutMixin):
    """
    A connection to the file service.

    Every request method (L{Requests}) writes its command at once and returns
    a L{Deferred} for its reply; they may be called before the greeting arrived.

    @param clock: runs the reply timeout (the reactor, or a L{task.Clock} in tests).
    @param timeout: seconds without any reply or progress while a request is
        pending before every pending request fails with L{ReplyTimeout} and
        the connection is dropped; C{None} waits forever.
    @param onEvent: called with each ``*`` event line (without the ``*``);
        a public attribute, so a program may replace it once connected.
    @param maxEntries: the most entries a LIST or WHO reply may announce.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float | None = None,
        onEvent: Callable[[str], None] | None = None,
        maxEntries: int = MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self.onEvent = onEvent
        self._maxEntries = maxEntries
        self._channel = _Channel(self)
        self._held: list[str] | None = None  # lines queued behind a USER awaiting its reply
        self._serverSaid: str | None = None
        self._disconnected = False
        self._dropped = False  # we aborted the connection; connectionLost is on its way
        self._closeWaiters: Waiters[None] = Waiters()
        # The greeting is the reply to a request nobody sent: the first in the queue.
        self._greeting: Failure | None = None
        self._greetingDone = False
        self._readyWaiters: Waiters[None] = Waiters()
        greeting = SimpleReader(expect=GREETING)
        greeting.deferred.addBoth(self._greeted)
        self._pending: list[Reader] = [greeting]

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
        self._readyWaiters.fire(None if self._greeting is None else self._greeting)

    def whenReady(self) -> Deferred[None]:
        """Fires once the server greeted us; fails if it refused (busy) or went away."""
        if not self._greetingDone:
            return self._readyWaiters.wait()
        return succeed(None) if self._greeting is None else fail(self._greeting)

    @property
    def serverSaid(self) -> str | None:
        """The server's last unsolicited error line (``Idle timeout.``, ...), which explains a close."""
        return self._serverSaid

    @property
    def disconnected(self) -> bool:
        """Is the connection gone (or being dropped), so that no request can succeed any more?"""
        return self._disconnected or self._dropped

    def whenDisconnected(self) -> Deferred[None]:
        """Fires once the connection is closed, however that happened."""
        return succeed(None) if self._disconnected else self._closeWaiters.wait()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._disconnected = True
        self.setTimeout(None)
        tlsError = describeTLSError(reason)

        def failed(request: Reader) -> Failure:
            if tlsError is not None:  # the real reason, rather than "closed before the reply"
                return Failure(ConnectionClosed(f"TLS failed: {tlsError}"))
            return request.connectionLost(self._serverSaid)

        self._failAll(failed)
        self._closeWaiters.fire(None)

    def timeoutConnection(self) -> None:
        self._log.info("no reply for {timeout} seconds, dropping the connection", timeout=self._timeout)
        self.abort(ReplyTimeout(f"no reply from the server for {self._timeout:g} s"))

    def abort(self, error: ClientError) -> None:
        """Fail every pending request with C{error} and drop the connection (Ctrl-C, a timeout)."""
        self._dropped = True
        self._failAll(lambda request: Failure(error))
        if self.transport is not None:
            self.transport.abortConnection()

    def _failAll(self, why: Callable[[Reader], Failure]) -> None:
        pending, self._pending = self._pending, []
        for request in pending:
            request.done = True
            request.deferred.errback(why(request))

    def _request(self, request: Reader, line: str) -> Deferred:
        if self.disconnected:
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
            self._log.debug("event: {event}", event=sanitize(text[1:]))
            if self.onEvent is not None:
                self.onEvent(text[1:])
            return
        if head is None:
            if text.startswith("!"):
                self._serverSaid = text[1:]
                self._log.info("server: {reply}", reply=sanitize(text))
            elif text:
                self._log.warn("unsolicited reply ignored: {reply}", reply=sanitize(text[:200]))
            return
        head.lineReceived(self._channel, text)
        self._afterInput(head)

    def rawDataReceived(self, data: bytes) -> None:
        head = self._pending[0]
        rest = head.rawDataReceived(self._channel, data)
        if isinstance(head, FileReader) and head.abandoned:
            self._abandon(head)
            return
        if rest is not None:
            self._afterInput(head)
            self.setLineMode(rest)

    def _abandon(self, head: FileReader) -> None:
        """The sink failed with much of the body still to come: fail it with the sink's error, drop the rest."""
        failure = head.sinkFailure
        assert failure is not None
        self._log.info("dropping the connection: the rest of a body has nowhere to go")
        self._dropped = True
        self._failAll(
            lambda request: failure if request is head else Failure(ConnectionClosed("connection dropped after a failed download"))
        )
        self.transport.abortConnection()

    def _afterInput(self, head: Reader) -> None:
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
        self._log.warn("protocol violation: {error}", error=str(failure.value))
        self._dropped = True
        self._failAll(lambda request: failure)
        self.transport.abortConnection()

