"""
Ending a session without a reset (half-close, discard, abort after a
grace), for both services: L{GracefulClose} and L{closeWithin}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport, ITransport

from echofile.timers import cancelPending
from echofile.twistedinternals import closeFlushed

#: How long a peer gets to read our last words before the connection is aborted.
CLOSE_GRACE_SECONDS = 10.0


def closeWithin(
    transport: ITransport, clock: IReactorTime, inputEnded: bool = False, grace: float = CLOSE_GRACE_SECONDS,
) -> "GracefulClose":
    """
    End the connection gracefully (L{GracefulClose}), aborting it after
    C{grace} seconds at the latest.

    The caller passes on C{readConnectionLost} to the result's
    C{peerClosed} and cancels it from ``connectionLost`` (it has the
    C{active}/C{cancel} of a DelayedCall, so L{cancelPending} does).
    """
    return GracefulClose(transport, clock, inputEnded, grace)


def _shutSending(transport: ITransport) -> None:
    """
    Shut our sending side once what is buffered is flushed, and keep reading.

    TLS (also under the PROXY wrapper, which copies the interfaces of the
    transport it wraps): ``loseConnection`` sends close_notify after the
    buffer drains and closes the socket only once the peer answers (its own
    close_notify or a FIN); the socket below keeps reading meanwhile.  A
    ``loseWriteConnection`` there would reach the TCP socket through the
    wrapper's attribute forwarding and cut the TLS stream short.  Plain
    TCP and UNIX sockets (also under the PROXY wrapper): a half-close.
    Anything else (test transports): a close.
    """
    if ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False):
        transport.loseConnection()
        return
    loseWriteConnection = getattr(transport, "loseWriteConnection", None)
    if loseWriteConnection is None:
        transport.loseConnection()
    else:
        loseWriteConnection()


class GracefulClose:
    """
    How the server ends a session without resetting it (PROTOCOL.md, "How
    sessions end").

    Closing a socket that still has unread input, or that receives input
    after the close, makes the kernel send a RST, which also discards what we
    sent and the peer has not read yet: the tail of a body, the last reply.
    So instead: shut our sending side once everything is flushed, read and
    discard what still comes (the protocol drops it), close when the peer
    closes its side, and abort only after C{grace} seconds, so that a peer
    that does not read cannot hold the connection.

    The protocol passes on C{readConnectionLost} (L{peerClosed}) and
    cancels from C{connectionLost} (L{cancel}).

    @param inputEnded: the peer already shut its sending side: nothing can
        arrive any more, so a plain close is safe and needs no waiting.
    """

    __slots__ = ("_transport", "_abortCall")

    def __init__(
        self, transport: ITransport, clock: IReactorTime, inputEnded: bool = False, grace: float = CLOSE_GRACE_SECONDS,
    ) -> None:
        self._transport = transport
        self._abortCall: IDelayedCall | None = None
        if inputEnded or not getattr(transport, "connected", True):
            # Nothing can arrive: close now if nothing is left to send (the
            # peer's FIN closes the socket in the turn it arrives, as a
            # protocol without half-close would), else after the flush.
            if closeFlushed(transport):
                return
            transport.loseConnection()  # (a no-op on a connection already gone)
        else:
            # The session may have paused reading (a command in progress, a full
            # write buffer): input must be read now, or it is unread at the close.
            if not getattr(transport, "disconnecting", False):
                transport.resumeProducing()  # type: ignore[attr-defined]
            _shutSending(transport)
        self._abortCall = clock.callLater(grace, self._abort)

    def peerClosed(self) -> None:
        """The peer shut its side: nothing more can arrive, close now (after the flush)."""
        self._transport.loseConnection()

    def active(self) -> bool:
        """Is the abort still to come?"""
        return self._abortCall is not None and self._abortCall.active()

    def cancel(self) -> None:
        """The connection is gone: the grace is over."""
        call, self._abortCall = self._abortCall, None
        cancelPending(call)

    def _abort(self) -> None:
        self._abortCall = None
        self._transport.abortConnection()
