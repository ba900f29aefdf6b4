"""
RFC 862 echo over TCP (UDP echo: L{echofile.udpecho}, re-exported here).

The TCP protocol is byte-exact and full duplex; the transport is registered as
its own streaming producer, so when the peer stops reading and our write
buffer fills, Twisted stops reading from that peer: memory per connection
stays bounded by the transport's buffer whatever the peer does.

The hot path is lean on purpose (see docs/performance.md): on a plain TCP
transport whose buffer is empty, received bytes are sent straight to the
socket, as asyncio does, instead of being buffered until the reactor
reports the socket writable (two epoll_ctl calls and a reactor round trip
per message).  Whatever the socket does not take goes to the transport's
buffer, so ordering, backpressure and half-close work as before.  The idle
timeout only notes the time of the last activity per message; its timer is
moved when it fires, not on every message.
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile.addresses import LOOPBACK, Network
from echofile.admission import Admission, AdmissionPolicy
from echofile.eventlog import SESSION_LOG_LIMIT, LogBudget, LogBudgets
from echofile.shutdown import SessionTracker
from echofile.limits import ConnectionLimiter, GracefulClose, SessionTimer, cancelPending, closeWithin
from echofile.twistedinternals import directSocket, writeNow


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class EchoProtocol(Protocol):
    """
    Send back every byte, in order.

    When the peer half-closes (shuts down its write side), what it sent before
    is flushed back to it and then the connection is closed.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, idleTimeout: float | None, admission: AdmissionPolicy) -> None:
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._policy = admission
        self._admission: Admission | None = None
        self._peerKey: str | None = None
        self._closing = False
        self._inputEnded = False
        self._graceful: GracefulClose | None = None
        self._timer = SessionTimer(clock, idleTimeout, self.timeoutConnection)
        #: The socket to write to directly, for a plain TCP transport.
        self._socket = None

    def connectionMade(self) -> None:
        # Counted from now; echoing starts once TLS is up and, behind a
        # PROXY-protocol balancer, the header named the client (echofile.admission).
        self._admission = Admission(self._policy, self.transport, self._admit, self._refuse)
        self._admission.begin()

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: TLS is up."""
        if self._admission is not None:
            self._admission.handshakeCompleted()

    def _refuse(self) -> None:
        # Over a cap: close at once; RFC 862 has no room for a message.
        self._closing = True
        self.transport.loseConnection()

    def _admit(self, peer: IAddress, key: str) -> None:
        self._peerKey = key
        self.transport.registerProducer(self.transport, True)
        self._socket = directSocket(self.transport)
        self._timer.start()
        self._logBudget().emit(LogLevel.debug, "echo: connection from {peer}", peer=self._peer)

    def _logBudget(self) -> LogBudget:
        """
        The log budget of the peer's address: an echo connection costs a
        client nothing but a connect(), and twistd writes debug lines too, so
        its lines are counted (the first of a window written, then a count).
        """
        assert self._peerKey is not None
        return self.factory.logBudgets.forKey(self._peerKey)

    @property
    def _peer(self) -> str:
        """The peer as the log names it (L{echofile.eventlog.peerText}, made by the admission)."""
        admission = self._admission
        return admission.peer if admission is not None else ""

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # we are ending the session: what still comes is read and dropped
        self._timer.touch()
        writeNow(self._socket, self.transport, data)  # nothing buffered: the socket is the next hop

    def readConnectionLost(self) -> None:
        """The peer is done sending: send back what is pending, then close."""
        self._inputEnded = True
        if self._graceful is not None:
            self._graceful.peerClosed()  # we were closing already: the peer's close is the end
        else:
            self._close()

    def writeConnectionLost(self) -> None:
        """Our own half-close is done (L{_close}); wait for the peer's."""
        if self._graceful is None:
            self._close()

    def timeoutConnection(self) -> None:
        self._logBudget().emit(LogLevel.info, "echo: {peer} idle, closing", peer=self._peer)
        self._close()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._socket = None
        self._timer.stop()
        # With a producer registered the transport would wait for it forever.
        self.transport.unregisterProducer()
        self._graceful = closeWithin(self.transport, self._clock, inputEnded=self._inputEnded)

    def shutdown(self) -> None:
        """The server is stopping: send back what is pending, then close."""
        if self._peerKey is None:  # not echoing yet (TLS handshake, PROXY header): nothing to send back
            self._closing = True
            self.transport.loseConnection()
            return
        self._close()

    def abort(self) -> None:
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.factory.sessions.discard(self)
        self._socket = None
        self._timer.stop()
        cancelPending(self._graceful)
        if self._admission is not None:
            self._admission.end()
        if self._peerKey is not None:
            self._logBudget().emit(LogLevel.debug, "echo: connection from {peer} closed", peer=self._peer)
            self._peerKey = None


class EchoFactory(ServerFactory):
    """
    Builds echo sessions; each one counts against the connection caps from the start.

    @param readyTimeout: seconds a connection has to finish its TLS handshake
        and PROXY header (--login-timeout); None: no limit.
    @param trustedProxies: the socket peers whose PROXY headers are believed.
    @param logBudget: log lines one client address may cause per window (--log-budget).
    """

    noisy = False  # no "Starting factory <... at 0x...>" at info; the port logs where it listens

    def __init__(
        self,
        clock: IReactorTime,
        limiter: ConnectionLimiter,
        idleTimeout: float | None,
        readyTimeout: float | None = 60.0,
        trustedProxies: Iterable[Network] = LOOPBACK,
        logBudget: int = SESSION_LOG_LIMIT,
    ) -> None:
        self.clock = clock
        self.limiter = limiter
        self.idleTimeout = idleTimeout
        self.admission = AdmissionPolicy(clock, limiter, readyTimeout, trustedProxies)
        self.sessions = SessionTracker()
        #: The log budgets of the client addresses and of the service (echofile.eventlog).
        self.logBudgets = LogBudgets(EchoProtocol._log, clock, service="echo", limit=logBudget)

    def stopFactory(self) -> None:
        self.logBudgets.close()

    def buildProtocol(self, addr: IAddress) -> EchoProtocol:
        protocol = EchoProtocol(self.clock, self.idleTimeout, self.admission)
        protocol.factory = self
        self.sessions.add(protocol)
        return protocol


# UDP echo lives in its own module; these names stay importable from here.
from echofile.udpecho import (  # noqa: E402
    DEFAULT_UDP_RATE, DROP_REPORT_INTERVAL, MAX_UDP_SOURCES, REFUSED_SOURCE_PORTS, EchoDatagramProtocol, SourceRates,
)

__all__ = [
    "DEFAULT_UDP_RATE", "DROP_REPORT_INTERVAL", "MAX_UDP_SOURCES", "REFUSED_SOURCE_PORTS",
    "EchoDatagramProtocol", "EchoFactory", "EchoProtocol", "SourceRates",
]
