"""
Per-address login penalties that outlive a connection.

The per-connection limit (3 failed AUTHs, then close) only costs an attacker
a reconnect.  L{LoginPenalties} remembers failures per peer address across
connections: C{maxFailures} failures within C{window} seconds lock the
address out of AUTH for C{duration} seconds, as OpenSSH's PerSourcePenalties
and fail2ban do.  Memory is bounded: at most C{maxAddresses} addresses are
tracked, the least recently seen forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from echofile.addresses import Network, inNetworks, normalizeKey, parseNetwork
from echofile.eventlog import loggable


def parseExempt(value: str) -> Network:
    """An address or network (``10.0.0.0/8``, ``::1``) that is never locked out (IPv4-mapped spellings normalised)."""
    return parseNetwork(value)


class _Record:
    __slots__ = ("failures", "lockedUntil")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.lockedUntil = 0.0


class LoginPenalties:
    """
    @param maxFailures: failures within C{window} that lock an address out;
        0 turns penalties off.
    @param exempt: networks never locked out (monitoring, a trusted proxy).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        maxFailures: int = 10,
        window: float = 600.0,
        duration: float = 600.0,
        exempt: Iterable[Network] = (),
        maxAddresses: int = 10_000,
    ) -> None:
        self._clock = clock
        self.maxFailures = maxFailures
        self.window = window
        self.duration = duration
        self.exempt = [parseNetwork(str(network)) for network in exempt]
        self.maxAddresses = maxAddresses
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def _isExempt(self, address: str) -> bool:
        # Keys are echofile.addresses keys; a UNIX-socket peer (uid:N) is never exempt.
        return inNetworks(address, self.exempt)

    def isLockedOut(self, address: str) -> bool:
        record = self._records.get(normalizeKey(address))
        return record is not None and record.lockedUntil > self._clock.seconds()

    def recordFailure(self, address: str) -> None:
        """Count a failed login from C{address}; lock it out when it has too many."""
        address = normalizeKey(address)
        if self.maxFailures <= 0 or self._isExempt(address):
            return
        now = self._clock.seconds()
        record = self._records.pop(address, None) or _Record()
        self._records[address] = record  # most recently seen last
        record.failures.append(now)
        while record.failures and record.failures[0] <= now - self.window:
            record.failures.popleft()
        if len(record.failures) >= self.maxFailures and record.lockedUntil <= now:
            record.lockedUntil = now + self.duration
            record.failures.clear()
            self._log.warn(
                "files: {peer} locked out of AUTH for {duration}s after {count} failures",
                peer=loggable(address), duration=self.duration, count=self.maxFailures,
            )
        while len(self._records) > self.maxAddresses:
            self._records.popitem(last=False)
