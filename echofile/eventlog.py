"""
What the server writes to its log about what clients do, and how much.

Two rules (docs/security.md, "Logging"):

- every value that came from a client (a file or user name, a peer
  address that a PROXY header supplied) is logged through L{loggable}, so no
  control or escape sequence reaches an operator's terminal or log
  pipeline raw;
- one session cannot flood the log: the info/warn events its client can
  repeat (transfers, failed logins, ...) go through a L{LogBudget}, which
  lets C{limit} of them through per C{window} seconds and then writes a
  single ``N further events from PEER suppressed`` line instead of the rest.
  Events that happen at most once per session (connect, log in, the reason
  it ended) are not counted: they are bounded by the session itself.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from echofile.text import sanitize

#: Repeatable client-triggered info/warn events one session may log per window...
SESSION_LOG_LIMIT = 20
#: ... of this many seconds.
SESSION_LOG_WINDOW = 60.0


def loggable(value: object) -> str:
    """C{value} (a name, a peer key, an address) as it may appear in a log event."""
    return sanitize(value if isinstance(value, str) else str(value))


class LogBudget:
    """
    The log budget of one session: at most C{limit} events per C{window}
    seconds on C{clock}; what is over it is counted and reported in one line
    when the window has passed (at the next event) or the session ends
    (L{close}).
    """

    __slots__ = ("_log", "_clock", "limit", "window", "_windowStart", "_count", "suppressed")

    def __init__(
        self, log: Logger, clock: IReactorTime, limit: int = SESSION_LOG_LIMIT, window: float = SESSION_LOG_WINDOW,
    ) -> None:
        self._log = log
        self._clock = clock
        self.limit = limit
        self.window = window
        self._windowStart = clock.seconds()
        self._count = 0
        self.suppressed = 0

    def emit(self, level: LogLevel, format: str, peer: str, **kwargs: Any) -> None:
        """Log C{format} at C{level} (C{peer} and C{kwargs} already L{loggable}) if the budget allows."""
        now = self._clock.seconds()
        if now - self._windowStart >= self.window:
            self.close(peer)
            self._windowStart = now
            self._count = 0
        if self._count < self.limit:
            self._count += 1
            self._log.emit(level, format, peer=peer, **kwargs)
        else:
            self.suppressed += 1

    def close(self, peer: str) -> None:
        """Report what was suppressed (the session ends, or a window passed)."""
        if self.suppressed:
            self._log.info(
                "{count} further events from {peer} suppressed (at most {limit} per {window}s from one address)",
                count=self.suppressed, peer=peer, limit=self.limit, window=self.window,
            )
            self.suppressed = 0


#: Addresses whose log budgets are remembered at most (the least recently seen forgotten first).
MAX_BUDGETS = 10_000


class LogBudgets:
    """
    One L{LogBudget} per client address, shared by all its sessions: a
    client that reconnects must not get a fresh budget each time (it wrote
    about 518 KB/s of log that way: connect, 21 FILEs, QUIT, again).
    Bounded like the login penalties: at most C{maxAddresses} budgets.
    """

    def __init__(self, log: Logger, clock: IReactorTime, maxAddresses: int = MAX_BUDGETS) -> None:
        self._log = log
        self._clock = clock
        self.maxAddresses = maxAddresses
        self._budgets: OrderedDict[str, LogBudget] = OrderedDict()

    def __len__(self) -> int:
        return len(self._budgets)

    def forKey(self, key: str) -> LogBudget:
        budget = self._budgets.pop(key, None)
        if budget is None:
            budget = LogBudget(self._log, self._clock)
        self._budgets[key] = budget  # most recently seen last
        while len(self._budgets) > self.maxAddresses:
            _, forgotten = self._budgets.popitem(last=False)
            forgotten.close("an address not seen for a while")
        return budget
