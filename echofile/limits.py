"""
Connection caps, session timers and the way sessions end (half-close,
discard, abort after a grace), shared by both services.

``twisted.protocols.policies.LimitConnectionsByPeer`` would be the obvious
tool, but in current Twisted it indexes the address as a tuple (``addr[0]``,
a TypeError with today's ``IPv4Address``) and decrements a different key than
it increments; we count by L{echofile.addresses} keys here.
The limiter is consulted by each factory's ``buildProtocol`` instead of
wrapping the factory, so the protocols keep the real TCP transport (half-close,
producers and, later, sendfile need it).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport, ITransport
from twisted.logger import Logger, LogLevel

from echofile import metrics
from echofile.eventlog import loggable

#: How long a peer gets to read our last words before the connection is aborted.
CLOSE_GRACE_SECONDS = 10.0

#: Refusals over a cap one service logs one by one per window...
REFUSAL_LOG_LIMIT = 20
#: ... of this many seconds; the rest are counted in one line.
REFUSAL_LOG_WINDOW = 60.0


class ConnectionLimiter:
    """
    Counts open connections, in total and per peer address.

    A refusal costs a client only a connect(), so refusals (L{logRefusal})
    are logged within a budget: the first L{REFUSAL_LOG_LIMIT} of a window one by one,
    then one line with the count of the others, at the first refusal after
    the window.  The budget is the service's, not an address's: addresses
    are cheap to change (an IPv6 prefix, PROXY headers).

    @param maxTotal: the most connections at once.
    @param maxPerAddress: the most connections at once from one address.
    @param clock: what the refusal log's window is measured on (default: the reactor).
    """

    _log = Logger()

    def __init__(
        self, maxTotal: int, maxPerAddress: int, service: str = "", clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
        self.service = service
        self.total = 0
        self._perAddress: Counter[str] = Counter()
        self._clock: IReactorTime = clock  # type: ignore[assignment]
        self._refusalWindowStart: float | None = None
        self._refusalsLogged = 0
        self._refusalsSuppressed = 0

    def admit(self, key: str) -> bool:
        """Take a slot for C{key}; False (and nothing taken) when a cap is reached."""
        if self.total >= self.maxTotal:
            self.logRefusal(
                "{service}: refused {peer}: {total} connections open (--max-connections)",
                peer=loggable(key), total=self.total,
            )
            metrics.CONNECTIONS_REFUSED.labels(service=self.service, reason="total_cap").inc()
            return False
        if self._perAddress[key] >= self.maxPerAddress:
            self.logRefusal(
                "{service}: refused {peer}: {count} connections from it open (--max-per-ip)",
                peer=loggable(key), count=self._perAddress[key],
            )
            metrics.CONNECTIONS_REFUSED.labels(service=self.service, reason="per_address_cap").inc()
            return False
        self.total += 1
        self._perAddress[key] += 1
        return True

    def logRefusal(self, format: str, level: LogLevel = LogLevel.warn, **kwargs: object) -> None:
        """
        Log a connection refused at accept (C{format} gets C{service} and
        C{kwargs}, already loggable) if the window's budget allows, else
        count it: over a cap here, from an untrusted proxy in admission.
        """
        now = self._clock.seconds()
        start = self._refusalWindowStart
        if start is None or now - start >= REFUSAL_LOG_WINDOW:
            if self._refusalsSuppressed:
                self._log.warn(
                    "{service}: refused {count} further connections in {window}s (not logged one by one)",
                    service=self.service, count=self._refusalsSuppressed, window=REFUSAL_LOG_WINDOW,
                )
            self._refusalWindowStart = now
            self._refusalsLogged = self._refusalsSuppressed = 0
        if self._refusalsLogged < REFUSAL_LOG_LIMIT:
            self._refusalsLogged += 1
            self._log.emit(level, format, service=self.service, **kwargs)
        else:
            self._refusalsSuppressed += 1

    def release(self, key: str) -> None:
        """Give back a slot taken by L{admit}."""
        self.total -= 1
        self._perAddress[key] -= 1
        if self._perAddress[key] <= 0:
            del self._perAddress[key]

    def rekey(self, old: str, new: str) -> bool:
        """
        Move a slot taken for C{old} to C{new}: the PROXY header named the
        client behind the balancer.  False, and the slot given back, when
        C{new} is at its per-address cap.
        """
        if old == new:
            return True
        self.release(old)
        return self.admit(new)

    def countFor(self, key: str) -> int:
        return self._perAddress.get(key, 0)


def cancelPending(call: IDelayedCall | None) -> None:
    """Cancel C{call} unless it is None, has already run, or was cancelled."""
    if call is not None and call.active():
        call.cancel()


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
        if inputEnded or not getattr(transport, "connected", True):
            transport.loseConnection()  # (a no-op on a connection already gone)
        else:
            # The session may have paused reading (a command in progress, a full
            # write buffer): input must be read now, or it is unread at the close.
            if not getattr(transport, "disconnecting", False):
                transport.resumeProducing()  # type: ignore[attr-defined]
            _shutSending(transport)
        self._abortCall: IDelayedCall | None = clock.callLater(grace, self._abort)

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


class SessionTimer:
    """
    A session's idle timeout and an optional fixed deadline (the login
    deadline), on one DelayedCall that is moved only when it fires.

    Activity is a timestamp (L{touch}), not a C{DelayedCall.reset} per
    message or line: cheaper on the hot path, and one timer instead of two
    per session keeps idle sessions small.

    @param onIdle: called once no activity was seen for C{idleTimeout}.
    """

    __slots__ = ("_clock", "_idleTimeout", "_onIdle", "_last", "_deadline", "_onDeadline", "_call")

    def __init__(self, clock: IReactorTime, idleTimeout: float | None, onIdle: Callable[[], None]) -> None:
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._onIdle = onIdle
        self._last = 0.0
        self._deadline: float | None = None
        self._onDeadline: Callable[[], None] | None = None
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        """Begin counting idle time from now."""
        self._last = self._clock.seconds()
        self._schedule()

    def touch(self) -> None:
        """Something happened: the idle time starts again."""
        self._last = self._clock.seconds()

    def setDeadline(self, seconds: float, onDeadline: Callable[[], None]) -> None:
        """Call C{onDeadline} C{seconds} from now unless L{clearDeadline} comes first."""
        self._deadline = self._clock.seconds() + seconds
        self._onDeadline = onDeadline
        self._schedule()

    def clearDeadline(self) -> None:
        self._deadline = self._onDeadline = None

    def stop(self) -> None:
        self.clearDeadline()
        self._idleTimeout = None
        call, self._call = self._call, None
        cancelPending(call)

    def _due(self) -> float | None:
        times = [t for t in (self._deadline, None if self._idleTimeout is None else self._last + self._idleTimeout) if t is not None]
        return min(times) if times else None

    def _schedule(self) -> None:
        due = self._due()
        if due is None:
            return
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= due:
                return  # it fires first and schedules again from there
            # Moving a DelayedCall sooner is a linear search of the reactor's
            # heap; cancelling is cheap.
            call.cancel()
        self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        if self._deadline is not None and now >= self._deadline:
            onDeadline = self._onDeadline
            self.clearDeadline()
            assert onDeadline is not None
            onDeadline()
        elif self._idleTimeout is not None and now - self._last >= self._idleTimeout:
            self._idleTimeout = None
            self._onIdle()
            return
        self._schedule()
