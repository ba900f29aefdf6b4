"""
``echofile-client echo``: send bytes to the echo service and write back
what returns.

Standard input and output are reached through L{StandardIO}, with
producers registered both ways, so the reactor never blocks on a pipe and
neither side buffers without bound.  The session ends once the input ended
and every byte sent has come back (counting, rather than half-closing, works
over any endpoint, TLS included).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Generator

from twisted.internet import fdesc
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime, ITransport
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile.client.console import Fatal
from echofile.client.errors import ClientError, ConnectionClosed, ReplyTimeout
from echofile.client.session import Session, connect


class EchoClient(Protocol, TimeoutMixin):
    """
    One echo session.  L{done} fires with the byte count once the input
    ended and all of it came back, or fails (connection lost, timeout).

    @param output: where returned bytes go (standard output's transport).
    @param timeout: seconds without returned bytes, while some are still
        outstanding, before giving up.  An idle interactive user is not a timeout.
    """

    def __init__(self, clock: IReactorTime, timeout: float | None) -> None:
        self._clock = clock
        self._timeout = timeout
        self.output: ITransport | None = None
        self.sent = 0
        self.received = 0
        self._inputDone = False
        self._abandoned = False
        self._failure: Failure | None = None
        self.done: Deferred[int] = Deferred()

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        return self._clock.callLater(period, func)

    def send(self, data: bytes) -> None:
        if not data:
            return
        if self.sent == self.received:
            self.setTimeout(self._timeout)
        self.sent += len(data)
        self.transport.write(data)

    def finishInput(self) -> None:
        self._inputDone = True
        self._checkDone()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.output is not None:
            self.output.write(data)
        self.resetTimeout()
        if self.received >= self.sent:
            self.setTimeout(None)
        self._checkDone()

    def abandon(self) -> None:
        """Nobody reads our output any more: end quietly, without waiting for the rest."""
        self._inputDone = self._abandoned = True
        self._close()

    def _checkDone(self) -> None:
        if self._inputDone and self.received >= self.sent:
            self._close()

    def _close(self) -> None:
        # A transport whose (paused) producer is still registered resumes it
        # instead of closing once its buffer drains: unregister first.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self._failure = Failure(
            ReplyTimeout(f"echo server returned nothing for {self._timeout:g} s ({self.sent - self.received} bytes outstanding)")
        )
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        if self._failure is not None:
            self.done.errback(self._failure)
        elif self._abandoned or (self._inputDone and self.received >= self.sent):
            self.done.callback(self.received)
        else:
            self.done.errback(
                ConnectionClosed(f"echo server closed the connection after returning {self.received} of {self.sent} bytes")
            )


@implementer(IHalfCloseableProtocol)
class StdioBridge(Protocol):
    """Standard input/output's side: input goes to the echo session; L{closed} fires once output is flushed."""

    def __init__(self, echo: EchoClient) -> None:
        self._echo = echo
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._echo.send(data)

    def readConnectionLost(self) -> None:
        self._echo.finishInput()

    def writeConnectionLost(self) -> None:
        # Our reader went away (``| head``): nobody wants the rest.
        self._echo.abandon()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed.callback(None)


@inlineCallbacks
def runEcho(session: Session) -> Generator[Deferred[Any], Any, int]:
    """``echo``: TEXT or standard input to the echo service, what returns to standard output."""
    options, streams, reactor = session.options, session.streams, session.reactor
    echo = EchoClient(reactor, options.timeout)
    yield connect(reactor, session.endpoint, session.description, echo, options.timeout, session.interruption)
    bridge = StdioBridge(echo)
    if options.text:
        inputFd = os.open(os.devnull, os.O_RDONLY)
    else:
        inputFd = streams.stdin.fileno()
    try:
        stdio = StandardIO(bridge, stdin=inputFd, stdout=streams.stdout.fileno(), reactor=reactor)
        echo.output = stdio
        echo.transport.registerProducer(stdio, True)
        stdio.registerProducer(echo.transport, True)
        if options.text:
            echo.send(os.fsencode(" ".join(options.text) + "\n"))
        try:
            yield echo.done
        except ClientError as e:
            raise Fatal(str(e)) from None
        finally:
            stdio.unregisterProducer()  # else a paused producer keeps the output open (see EchoClient._close)
            stdio.loseConnection()
            yield bridge.closed
    finally:
        if options.text:
            os.close(inputFd)
        else:
            fdesc.setBlocking(inputFd)  # StandardIO made it non-blocking: give a terminal back as it was
    return 0
