"""
A file-protocol session's life cycle: from accept (L{echofile.admission}:
counted, TLS and the PROXY header awaited) through the greeting, framing,
timers and half-close to its one way of ending (L{LineSession.endSession},
a close without a reset, or L{LineSession.abort}).

One L{State} says where a session is; what it may do follows from it, not
from a set of flags.  The commands themselves are L{echofile.files}'s.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IHandshakeListener
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile import wire
from echofile.admission import Admission
from echofile.eventlog import LogBudget
from echofile.holds import HeldInput
from echofile.sessionlog import SessionLog
from echofile.limits import GracefulClose, SessionTimer, cancelPending, closeWithin
from echofile.proxy import HealthCheck
from echofile.telnet import TelnetCommandFilter
from echofile.twistedinternals import insideLineLoop

if TYPE_CHECKING:
    from echofile.files import FilesFactory


class State(enum.Enum):
    """Where a session is in its life."""

    NEW = "new"  #: built, not connected yet
    WAITING = "waiting"  #: connected and counted; TLS or the PROXY header still awaited
    OPEN = "open"  #: greeted: commands are read and run
    ENDING = "ending"  #: greeted, then ended: nothing more is run, the close is under way
    DROPPING = "dropping"  #: ended before the greeting (busy, shut down while waiting)
    CLOSED = "closed"  #: the connection is gone


#: States in which the session runs no command and says nothing new (a tuple: its
#: membership test is by identity, where a frozenset's hashes each Enum in Python).
_ENDED = (State.ENDING, State.DROPPING, State.CLOSED)


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class LineSession(HeldInput, SessionLog):
    """
    The life cycle of one file-protocol session; subclasses add the commands
    (L{_run}) and what a session holds that must be let go (L{_letGo}).
    """

    delimiter = b"\n"

    def __init__(self, factory: "FilesFactory") -> None:
        super().__init__()
        self.factory = factory
        self._clock = factory.clock
        self._state = State.NEW
        self._peerKey = ""
        self._peerAddress: IAddress | None = None
        self._admission: Admission | None = None
        self.MAX_LENGTH = factory.maxLine + 1  # room for the CR of CR LF
        self._telnet: TelnetCommandFilter | None = None  # made by the first bytes received
        self._closing: GracefulClose | None = None
        self._timer = SessionTimer(self._clock, factory.idleTimeout, self.timeoutConnection)
        self._shutdownAfterTransfer = False
        self._inputEnded = False
        self._logBudget: LogBudget | None = None  # made by the first event that needs it

    # -- state -----------------------------------------------------------------

    @property
    def _connected(self) -> bool:
        return self._state not in (State.NEW, State.CLOSED)

    @property
    def _ending(self) -> bool:
        """Is the session over (run nothing, say nothing new)?"""
        return self._state in _ENDED

    @property
    def _greeted(self) -> bool:
        return self._state in (State.OPEN, State.ENDING)

    def _end(self) -> None:
        """Enter the ended state that fits: after the greeting or before it."""
        if not self._ending:
            self._state = State.ENDING if self._state is State.OPEN else State.DROPPING

    # -- connection life cycle -------------------------------------------------

    def connectionMade(self) -> None:
        self._state = State.WAITING
        # The connection counts against the caps from now on; the session
        # starts once it is usable: over TLS once the handshake is done (a
        # greeting before it would stall it, see echofile.tls), and behind a
        # PROXY-protocol balancer once the header with the client's address
        # arrived (see echofile.proxy and echofile.admission).
        self._admission = Admission(
            self.factory.admission, self.transport, self._start, lambda: self.endSession(wire.BUSY),
        )
        self._admission.begin()

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: TLS is up."""
        if self._admission is not None:
            self._admission.handshakeCompleted()

    def _start(self, peer: IAddress, key: str) -> None:
        """
        Greet the admitted client.

        @param peer: the client's address (from the PROXY header, if any).
        @param key: its key for the caps, lock-outs and logs.
        """
        if not self._connected:  # gone while we waited for TLS or the header
            return
        self._peerAddress = peer
        self._peerKey = key
        self._state = State.ENDING if self._state is State.DROPPING else State.OPEN
        if isinstance(peer, HealthCheck):  # every few seconds: at debug (twist's default level drops it)
            self._log.debug("files: connection from {peer} (a PROXY health check)", peer=self._peer)
        else:
            self._budget().sessionLine(LogLevel.info, "files: connection from {peer}", peer=self._peer)
        self._registerAsProducer()
        self._sendDirectly()
        if self.factory.loginTimeout is None:
            self._timer.start()
        else:
            # One deadline from the connection's start: the TLS handshake and the
            # PROXY header wait were part of it.
            assert self._admission is not None
            remaining = max(0.0, self.factory.loginTimeout - self._admission.elapsed())
            self._timer.start(remaining, self._loginTimedOut)
        self.reply(wire.GREETING)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        greeted = self._greeted
        self._state = State.CLOSED
        self._stopSendingDirectly()
        if self._admission is not None:
            self._admission.end()
        self._timer.stop()
        cancelPending(self._closing)
        self._letGo()
        self.factory.sessions.discard(self)
        # The log budget is the address's, not the session's: its summary line
        # comes when its window has passed, not per session (echofile.eventlog).
        if greeted:
            self._logClosed(reason)

    def _letGo(self) -> None:
        """The session is over: give back what it holds (a subclass's job)."""

    def timeoutConnection(self) -> None:
        if self._transfer is not None:
            # Nothing may be said inside a body; a stalled reader is cut off.
            self._because("stalled during a transfer, aborted")
            self.abort()
            return
        self._because("idle timeout")
        self.endSession(wire.IDLE_TIMEOUT)

    def _loginTimedOut(self) -> None:
        self._because("login timeout")
        self.endSession(wire.LOGIN_TIMEOUT)

    def shutdown(self) -> None:
        """The server is stopping: say so now, or right after the body being sent."""
        self._because("server shutdown")
        if self._state is State.WAITING:
            # Still in the TLS handshake or waiting for the PROXY header: nothing can be said.
            self._end()
            self.transport.loseConnection()
        elif self._transfer is not None:
            self._shutdownAfterTransfer = True
        else:
            self.endSession(wire.SHUTTING_DOWN)

    def abort(self) -> None:
        """Cut the connection now (a body in flight stays incomplete, without its trailer)."""
        self._because("aborted")
        self._end()
        self.transport.abortConnection()

    def endSession(self, lastLine: str | None) -> None:
        """
        Say C{lastLine} (if any), run no further command, and close without
        a reset: the client gets everything sent so far, whatever it
        pipelined (L{echofile.limits.GracefulClose}).
        """
        if self._ending:
            return
        self._end()
        self.paused = True
        self._timer.stop()
        self._letGo()
        if lastLine is not None:
            self.reply(lastLine)
        self._unregisterAsProducer()
        self._closing = closeWithin(self.transport, self._clock, inputEnded=self._inputEnded)

    def _cutShort(self) -> None:
        """A body could not be finished: close without another word."""
        self._because("transfer cut short")
        self._end()
        self._closing = closeWithin(self.transport, self._clock, inputEnded=self._inputEnded)

    def stopProducing(self) -> None:
        self._end()

    def _replyComplete(self) -> None:
        """After the last line of a body or listing: held events, then a pending shutdown."""
        self._flushEvents()
        if self._shutdownAfterTransfer:
            self.endSession(wire.SHUTTING_DOWN)

    # -- input -----------------------------------------------------------------

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side (``nc -N``, a script's EOF):
        answer every command it sent, an unterminated last line included,
        then close.
        """
        if self._ending:
            # We are closing: the client closed its side too, so the close is safe now.
            if self._closing is not None and not self._inputEnded:
                self._inputEnded = True
                self._closing.peerClosed()
            return
        if self._inputEnded:
            return
        self._inputEnded = True
        if self._bufferedInput():
            self.dataReceived(b"\n")
        self._closeIfInputDone()

    def writeConnectionLost(self) -> None:
        """Our half-close is done; we keep reading (and discarding) until the client closes."""
        if self._closing is None:  # not ours: nothing more can be said
            self._end()
            self.transport.loseConnection()

    def _closeIfInputDone(self) -> None:
        # Inside LineReceiver's loop, lines may still wait: dataReceived asks again after it.
        if self._inputEnded and not self._holds and not self._ending and not insideLineLoop(self):
            self._because("client finished sending")
            self.endSession(None)

    def dataReceived(self, data: bytes) -> None:
        if self._ending:
            return  # closing: what the client still sends is read and dropped
        telnet = self._telnet
        if telnet is None:
            telnet = self._telnet = TelnetCommandFilter()
        super().dataReceived(telnet.feed(data))
        if self._inputEnded:
            self._closeIfInputDone()
        else:
            self._limitHeldInput()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._because("line too long")
        self.endSession(wire.LINE_TOO_LONG)

    def lineReceived(self, line: bytes) -> None:
        if self._ending:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.factory.maxLine:
            self.lineLengthExceeded(line)
            return
        if not line.strip(b" \t"):
            return  # an empty line gets no reply and is no activity
        self._timer.touch()
        try:
            text = line.decode("utf-8").strip(" \t")
        except UnicodeDecodeError:
            self.reply(wire.error(wire.INVALID_COMMAND))
            return
        self._run(text)

    def _run(self, text: str) -> None:
        """Run one command line (non-empty, trimmed): a subclass's job."""
        raise NotImplementedError
