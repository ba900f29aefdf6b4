"""
Twisted's TLS layer for echofile's C{ssl:} listeners, with less Python per connection.

An C{ssl:} endpoint accepts with Twisted's C{TLSMemoryBIOFactory}, which
builds a C{BufferingTLSTransport} per connection.  L{EchofileTLS} is that
class with three steps done more cheaply (the mechanisms are in
L{echofile.twistedinternals}); what goes over the wire, and when a
connection is verified, refused, timed out or closed, is Twisted's:

- C{makeConnection} declares the transport's interfaces once, not once per
  interface and then again (L{connectTLS}).
- What OpenSSL produces (the server's handshake messages, the session
  tickets, replies, C{close_notify}) goes to the socket at once when nothing
  is queued before it, instead of waiting in the socket transport for the
  next reactor turn (L{sendTLSOutput}); all it produces while handling
  received bytes, or closing, goes in one C{send}.
- What the session writes while handling received bytes (the greeting
  after the handshake, replies to a command) is sent when that handling is
  done, not from a timer on the next reactor turn, and no timer is made
  (L{holdSmallWrites}, L{flushSmallWrites}); writes made in one
  C{dataReceived} are still one C{SSL_write}.  Past the socket
  transport's buffer size it is sent at once (L{heldOutputFull}), so that
  the buffer still fills and pauses the session within one read.

And two of Twisted's endings done right (L{flushBeforeShutdown},
L{releaseProducer}): when the client's C{close_notify} arrives, the replies
to the commands that came with it are sent before the server's own (TLS
1.3), and the connection closes once they are flushed, also when they
filled the socket transport's buffer (Twisted's stayed open until the
session's idle timeout).

L{fasterTLS} puts it under an C{ssl:} endpoint (also under C{haproxy:}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from echofile.twistedinternals import (
    ListeningHook, connectTLS, directSocket, flushBeforeShutdown, flushSmallWrites, forgetProducer, heldOutputFull,
    holdSmallWrites, knowTLSType, releaseProducer, sendTLSOutput, serverTLSOptions, stopReleasedProducer, tlsFactoryOf,
)

try:
    from twisted.protocols.tls import BufferingTLSTransport
except ImportError:  # pragma: no cover - no pyOpenSSL, so no TLS endpoints either
    BufferingTLSTransport = None  # type: ignore[assignment,misc]


if BufferingTLSTransport is not None:

    class EchofileTLS(BufferingTLSTransport):  # type: ignore[misc,valid-type]
        """C{BufferingTLSTransport} with the per-connection steps above done once, and sooner."""

        #: Inside C{dataReceived} or C{loseConnection}: OpenSSL's output waits in its memory BIO
        #: and goes out in one C{send} at the end (the tickets with the greeting, a reply with
        #: C{close_notify}); sent one by one, the second would wait for the peer's delayed ACK (Nagle).
        _holding = False
        #: The socket under the TLS layer, where its output goes when nothing is queued (None: the transport's write).
        _socket = None
        #: TLS ended while the session was a producer, which was taken from the socket transport (L{releaseProducer}).
        _producerReleased = False

        def makeConnection(self, transport: Any) -> None:
            self._socket = directSocket(transport)
            connectTLS(self, transport)

        def dataReceived(self, data: bytes) -> None:
            held, self._holding = self._holding, True
            holdSmallWrites(self)
            try:
                super().dataReceived(data)
            finally:
                flushSmallWrites(self)
                self._holding = held
                if not held:
                    sendTLSOutput(self, self._socket)

        def loseConnection(self) -> None:
            held, self._holding = self._holding, True
            try:
                super().loseConnection()
            finally:
                self._holding = held
                if not held:
                    sendTLSOutput(self, self._socket)

        def _shutdownTLS(self) -> None:
            flushBeforeShutdown(self)
            super()._shutdownTLS()

        def _tlsShutdownFinished(self, reason: Any) -> None:
            super()._tlsShutdownFinished(reason)
            if releaseProducer(self):
                self._producerReleased = True
            if reason is not None:
                forgetTraceback(reason)

        def connectionLost(self, reason: Failure = connectionDone) -> None:
            if self._producerReleased:
                stopReleasedProducer(self)  # what the socket transport does first with a producer it holds
            super().connectionLost(reason)
            forgetProducer(self)  # the session's: kept, it made a cycle with the session

        def _flushSendBIO(self) -> None:
            """Twisted's one path from OpenSSL's output to the socket (handshake, records, alerts)."""
            if not self._holding or heldOutputFull(self):  # past the buffer's size: now, so that backpressure works
                sendTLSOutput(self, self._socket)

    knowTLSType(EchofileTLS)
else:  # pragma: no cover
    EchofileTLS = None  # type: ignore[assignment,misc]


def forgetTraceback(reason: Failure) -> None:
    """
    Keep C{reason}'s traceback as text only (what C{Failure.cleanFailure} does; pytest-twisted
    turns that off, so it is spelled out).  Twisted makes the Failure of a TLS connection that
    ended in an error (a reset, a close without close_notify, a bad record) in
    C{_flushReceiveBIO} and keeps it in that frame, which its traceback holds: a cycle that
    left the transport, its socket and its OpenSSL connection to the garbage collector.  Only
    its error is used (the session's close line).
    """
    reason.frames  # computed from the traceback now, as text, for whoever formats it later
    reason.tb = None
    reason.value.__traceback__ = None


def useEchofileTLS(port: Any) -> bool:
    """Make a listening C{ssl:} port's connections L{EchofileTLS}: True if it is one (before it accepted any)."""
    factory = tlsFactoryOf(port)
    if factory is None or EchofileTLS is None or factory.protocol is not BufferingTLSTransport:
        return False
    factory.protocol = EchofileTLS
    return True


def fasterTLS(endpoint: Any) -> Any:
    """C{endpoint}, listening with L{EchofileTLS} if it is an C{ssl:} one (also under C{haproxy:})."""
    if serverTLSOptions(endpoint) is None or EchofileTLS is None:
        return endpoint
    return ListeningHook(endpoint, useEchofileTLS)
