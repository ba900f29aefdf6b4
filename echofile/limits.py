"""
Connection caps per service and per client address (L{ConnectionLimiter}),
with a bounded log of refusals.

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

from twisted.logger import Logger, LogLevel

from echofile import metrics
from echofile.eventlog import loggable

# The session timers and the graceful close lived here; they are re-exported
# for the modules that import them from here.
from echofile.closing import CLOSE_GRACE_SECONDS, GracefulClose, closeWithin
from echofile.timers import SessionTimer, cancelPending

__all__ = [
    "CLOSE_GRACE_SECONDS", "REFUSAL_LOG_LIMIT", "REFUSAL_LOG_WINDOW",
    "ConnectionLimiter", "GracefulClose", "SessionTimer", "cancelPending", "closeWithin",
]

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

    def admit(self, key: str, peer: str | None = None) -> bool:
        """
        Take a slot for C{key}; False (and nothing taken) when a cap is reached.

        @param peer: how the log names the connection (L{echofile.eventlog.peerText}); default: C{key}.
        """
        if self.total >= self.maxTotal:
            self.logRefusal(
                "{service}: refused {peer}: {total} connections open (--max-connections)",
                peer=loggable(key) if peer is None else peer, total=self.total,
            )
            metrics.CONNECTIONS_REFUSED.labels(service=self.service, reason="total_cap").inc()
            return False
        if self._perAddress[key] >= self.maxPerAddress:
            self.logRefusal(
                "{service}: refused {peer}: {count} connections from its address open (--max-per-ip)",
                peer=loggable(key) if peer is None else peer, count=self._perAddress[key],
            )
            metrics.CONNECTIONS_REFUSED.labels(service=self.service, reason="per_address_cap").inc()
            return False
        self.total += 1
        self._perAddress[key] += 1
        return True

    def logRefusal(self, format: str, level: LogLevel = LogLevel.info, **kwargs: object) -> None:
        """
        Log a connection refused before its session began (C{format} gets
        C{service} and C{kwargs}, already loggable) if the window's budget
        allows, else count it: over a cap here; from an untrusted proxy,
        with a bad PROXY header, or not ready by the deadline in admission.
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

    def rekey(self, old: str, new: str, peer: str | None = None) -> bool:
        """
        Move a slot taken for C{old} to C{new}: the PROXY header named the
        client behind the balancer.  False, and the slot given back, when
        C{new} is at its per-address cap (C{peer}: as for L{admit}).
        """
        if old == new:
            return True
        self.release(old)
        return self.admit(new, peer)

    def countFor(self, key: str) -> int:
        return self._perAddress.get(key, 0)
