"""
Connection caps and the close-then-abort policy shared by both services.

``twisted.protocols.policies.LimitConnectionsByPeer`` would be the obvious
tool, but in current Twisted it indexes the address as a tuple (``addr[0]``,
a TypeError with today's ``IPv4Address``) and decrements a different key than
it increments; we count by host here.
The limiter is consulted by each factory's ``buildProtocol`` instead of
wrapping the factory, so the protocols keep the real TCP transport (half-close,
producers and, later, sendfile need it).
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.logger import Logger

#: How long a peer gets to read our last words before the connection is aborted.
CLOSE_GRACE_SECONDS = 10.0


def addressKey(address: IAddress | None) -> str:
    """The per-address counting key: the host, or the address type for non-IP transports."""
    host = getattr(address, "host", None)
    if isinstance(host, str):
        return host
    return type(address).__name__


class ConnectionLimiter:
    """
    Counts open connections, in total and per peer address.

    @param maxTotal: the most connections at once.
    @param maxPerAddress: the most connections at once from one address.
    """

    _log = Logger()

    def __init__(self, maxTotal: int, maxPerAddress: int, service: str = "") -> None:
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
        self.service = service
        self.total = 0
        self._perAddress: Counter[str] = Counter()

    def admit(self, key: str) -> bool:
        """Take a slot for C{key}; False (and nothing taken) when a cap is reached."""
        if self.total >= self.maxTotal:
            self._log.warn(
                "{service}: refused {peer}: {total} connections open (--max-connections)",
                service=self.service, peer=key, total=self.total,
            )
            return False
        if self._perAddress[key] >= self.maxPerAddress:
            self._log.warn(
                "{service}: refused {peer}: {count} connections from it open (--max-per-ip)",
                service=self.service, peer=key, count=self._perAddress[key],
            )
            return False
        self.total += 1
        self._perAddress[key] += 1
        return True

    def release(self, key: str) -> None:
        """Give back a slot taken by L{admit}."""
        self.total -= 1
        self._perAddress[key] -= 1
        if self._perAddress[key] <= 0:
            del self._perAddress[key]

    def countFor(self, key: str) -> int:
        return self._perAddress.get(key, 0)


def closeWithin(transport: ITransport, clock: IReactorTime, grace: float = CLOSE_GRACE_SECONDS) -> IDelayedCall:
    """
    Close gently (flushing what is buffered) and abort if that has not
    happened after C{grace} seconds: a gentle close never completes against
    a peer that does not read.

    The caller cancels the returned call from ``connectionLost``.
    """
    transport.loseConnection()
    return clock.callLater(grace, transport.abortConnection)
