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

from echofile import metrics
from echofile.addresses import Network, inNetworks, normalizeKey, parseNetwork
from echofile.eventlog import loggable


class ActiveLockouts:
    """
    The addresses locked out now, for C{echofile_lockouts_active}.

    Updated on the reactor thread; L{count} runs in the scrape's thread (the
    gauge's function), so it reads only an immutable tuple of the lock-outs'
    ends, replaced whole on every change: nothing is iterated while it changes.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._snapshot: tuple[float, ...] = ()

    def update(self, address: str, until: float) -> bool:
        """C{address} is locked out until C{until} (0: not at all); True if it was not locked out before."""
        now = self._clock.seconds()
        began = self._until.get(address, 0.0) <= now and until > now
        self._until = {a: u for a, u in self._until.items() if u > now and a != address}
        if until > now:
            self._until[address] = until
        self._snapshot = tuple(self._until.values())
        return began

    def count(self) -> int:
        now = self._clock.seconds()
        return sum(1 for until in self._snapshot if until > now)


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
        #: One server per process: the newest penalties are what the gauge shows.
        self.active = ActiveLockouts(clock)
        metrics.LOCKOUTS_ACTIVE.set_function(self.active.count)

    def __len__(self) -> int:
        return len(self._records)

    def _isExempt(self, address: str) -> bool:
        # Keys are echofile.addresses keys; a UNIX-socket peer (uid:N) is never exempt.
        return inNetworks(address, self.exempt)

    def isLockedOut(self, address: str) -> bool:
        return self._lockedUntil(normalizeKey(address)) > self._clock.seconds()

    def _lockedUntil(self, address: str) -> float:
        """When the lock-out of C{address} ends (in the past when there is none)."""
        record = self._records.get(address)
        return record.lockedUntil if record is not None else 0.0

    def _lockChanged(self, address: str) -> None:
        """Tell the gauge (and count a lock-out that began): every change of a lock-out goes through here."""
        if self.active.update(address, self._lockedUntil(address)):
            metrics.LOCKOUTS_STARTED.inc()

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
            self._lockChanged(address)
        while len(self._records) > self.maxAddresses:
            forgotten, old = self._records.popitem(last=False)
            if old.lockedUntil > now:
                self._lockChanged(forgotten)
