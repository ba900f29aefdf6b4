"""
RFC 862 echo over TCP and UDP.

The TCP protocol is byte-exact and full duplex; the transport is registered as
its own streaming producer, so when the peer stops reading and our write
buffer fills, Twisted stops reading from that peer: memory per connection
stays bounded by the transport's buffer whatever the peer does.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IAddress, IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile.shutdown import SessionTracker
from echofile.limits import ConnectionLimiter, closeWithin
from echofile.proxy import peerKey, whenPeerKnown


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol, TimeoutMixin):
    """
    Send back every byte, in order.

    When the peer half-closes (shuts down its write side), what it sent before
    is flushed back to it and then the connection is closed.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, idleTimeout: float | None, limiter: ConnectionLimiter) -> None:
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._limiter = limiter
        self._peerKey: str | None = None
        self._closing = False
        self._abortCall: IDelayedCall | None = None

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's hook, bound to our injected clock."""
        return self._clock.callLater(period, func)

    def connectionMade(self) -> None:
        # Behind a PROXY-protocol balancer, admit by the client's address from the header.
        whenPeerKnown(self.transport, self._clock, self._idleTimeout).addCallback(self._admit)

    def _admit(self, peer: IAddress) -> None:
        key = peerKey(peer)
        if not self._limiter.admit(key):
            # Over a cap: close at once; RFC 862 has no room for a message.
            self._closing = True
            self.transport.loseConnection()
            return
        self._peerKey = key
        self.transport.registerProducer(self.transport, True)
        self.setTimeout(self._idleTimeout)
        self._log.debug("echo: connection from {peer}", peer=self.transport.getPeer())

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)
        self.resetTimeout()

    def readConnectionLost(self) -> None:
        self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    def timeoutConnection(self) -> None:
        self._log.info("echo: {peer} idle, closing", peer=self.transport.getPeer())
        self._close()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.setTimeout(None)
        # With a producer registered the transport would wait for it forever.
        self.transport.unregisterProducer()
        self._abortCall = closeWithin(self.transport, self._clock)

    def shutdown(self) -> None:
        """The server is stopping: send back what is pending, then close."""
        self._close()

    def abort(self) -> None:
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.factory.sessions.discard(self)
        self.setTimeout(None)
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()
        if self._peerKey is not None:
            self._limiter.release(self._peerKey)
            self._peerKey = None
        self._log.debug("echo: connection from {peer} closed", peer=self.transport.getPeer())


class EchoFactory(ServerFactory):
    """
    Builds echo sessions; each one checks the connection caps as it starts.
    """

    def __init__(self, clock: IReactorTime, limiter: ConnectionLimiter, idleTimeout: float | None) -> None:
        self.clock = clock
        self.limiter = limiter
        self.idleTimeout = idleTimeout
        self.sessions = SessionTracker()

    def buildProtocol(self, addr: IAddress) -> EchoProtocol:
        protocol = EchoProtocol(self.clock, self.idleTimeout, self.limiter)
        protocol.factory = self
        self.sessions.add(protocol)
        return protocol


class EchoDatagramProtocol(DatagramProtocol):
    """Answer each datagram with an identical one to its source."""

    _log = Logger()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        try:
            self.transport.write(datagram, addr)
        except (OSError, MessageLengthError) as e:  # one bad peer must not stop the service
            self._log.debug("udp echo: cannot answer {peer}: {error}", peer=addr, error=e)
