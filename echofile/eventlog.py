"""
What the server writes to its log about what clients do, and how much.

The rules (docs/security.md, "Logging"):

- every value that came from a client (a file or user name, a peer
  address that a PROXY header supplied) is logged through L{loggable}, so no
  control or escape sequence reaches an operator's terminal or log
  pipeline raw;
- a line about one connection names its peer in one form, L{peerText}'s
  (``host:port``, ``[v6]:port``, ``uid:N``, and behind a balancer
  ``client (via PROXY from balancer)``); a line about an address (a
  lock-out, a budget's summary) names the address alone, as
  L{echofile.addresses} keys it;
- one session cannot flood the log: the info/warn events its client can
  repeat (transfers, failed logins, ...) go through a L{LogBudget}, which
  lets C{limit} of them through per C{window} seconds and then writes a
  single ``N further events from PEER suppressed`` line instead of the rest,
  once the window has passed (at most one such line per address per window).
  A login counts too; a session's connect and close lines do not, but once
  the address's budget is spent they are counted instead of written, so a
  reconnect loop is bounded as well;
- all addresses of a service together cannot flood it either: the lines a
  client causes without real work (connection lines, refused commands, the
  summary lines) also pass a L{ServiceLogBudget} (L{SERVICE_LOG_LIMIT} per
  window); audit lines (a login, a file sent) never do.
"""

from __future__ import annotations

from collections import OrderedDict
from time import time
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

from echofile.text import sanitize

#: The levels L{Logger.emit} accepts.
_LEVELS = frozenset(LogLevel.iterconstants())


class SessionLogger(Logger):
    """
    A C{twisted.logger.Logger} for the lines every session writes (connect,
    close): the same events, but the level is checked against a frozenset.
    Twisted's C{emit} checks it with C{LogLevel.iterconstants()}, which
    sorts the five constants on every call: about 9,700 of the 46,000
    instructions of one line through twistd's log.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        try:
            known = level in _LEVELS
        except TypeError:  # unhashable: not a level
            known = False
        if not known:  # Twisted reports a bad level its own way
            super().emit(level, format, **kwargs)
            return
        event = kwargs
        event.update(
            log_logger=self, log_level=level, log_namespace=self.namespace, log_source=self.source,
            log_format=format, log_time=time(),
        )
        if "log_trace" in event:
            event["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(event)


#: Repeatable client-triggered info/warn events one session may log per window...
SESSION_LOG_LIMIT = 20
#: ... of this many seconds.
SESSION_LOG_WINDOW = 60.0


#: Characters of one client-supplied value a log event shows; the rest is counted, not written.
MAX_LOGGED_CHARS = 256


def loggable(value: object) -> str:
    """
    C{value} (a name, a peer key, an address) as it may appear in a log
    event: made safe, and at most L{MAX_LOGGED_CHARS} long.  Without the
    cap a refused C{FILE} logged its whole argument (up to --max-line, 4
    KB), so each budgeted line could carry 4 KB of the client's text.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_LOGGED_CHARS:
        text = f"{text[:MAX_LOGGED_CHARS]}... ({len(text) - MAX_LOGGED_CHARS} more characters)"
    return sanitize(text)


def peerText(key: str, port: int | None = None, proxiedBy: str | None = None) -> str:
    """
    The one way a log line names a connection's peer (docs/deploy.md,
    "Reading the log"): C{key} is the peer's key (L{echofile.addresses}: an
    IP address in its canonical spelling, IPv4-mapped as IPv4, or ``uid:N``
    on a UNIX socket), C{port} its port if it has one, and C{proxiedBy}
    the L{peerText} of the balancer whose PROXY header named it.

    ``127.0.0.1:40112``, ``[::1]:40112``, ``uid:1000``,
    ``192.0.2.9:5000 (via PROXY from 127.0.0.1:40112)``.
    """
    if port is not None:
        key = f"[{key}]:{port}" if ":" in key else f"{key}:{port}"
    if proxiedBy is not None:
        key = f"{key} (via PROXY from {proxiedBy})"
    return sanitize(key)


#: Lines a client can cause without real work (connection lines, refused
#: commands) that one service writes per window from all addresses together:
#: 50 a second averaged over the window, a busy server's worth.
SERVICE_LOG_LIMIT = 3000


class _Window:
    """
    A budget of C{limit} lines per C{window} seconds on C{clock}: what is
    over it is counted, and reported in one summary line (L{_summarize})
    when the window has passed (a timer, started by the first suppressed
    line) or the budget is closed.
    """

    __slots__ = ("_log", "_clock", "limit", "window", "_windowStart", "_count", "suppressed", "_report")

    def __init__(self, log: Logger, clock: IReactorTime, limit: int, window: float) -> None:
        self._log = log
        self._clock = clock
        self.limit = limit
        self.window = window
        self._windowStart = clock.seconds()
        self._count = 0
        self.suppressed = 0
        self._report: IDelayedCall | None = None  # the summary line at the end of the window, once one was suppressed

    def _roll(self) -> None:
        now = self._clock.seconds()
        if now - self._windowStart >= self.window:
            self.close()
            self._windowStart = now
            self._count = 0

    def _take(self, events: int = 1) -> bool:
        """Count one line in this window: True if it may be written, else C{events} are counted for the summary."""
        self._roll()
        if self._count < self.limit:
            self._count += 1
            return True
        self._suppress(events)
        return False

    def _suppress(self, events: int = 1) -> None:
        self.suppressed += events
        if self._report is None:
            self._report = self._clock.callLater(
                max(0.0, self._windowStart + self.window - self._clock.seconds()), self._windowEnded,
            )

    def _windowEnded(self) -> None:
        self._report = None
        self.close()

    def close(self) -> None:
        """Report what was suppressed now (the window passed, the budget is forgotten, or the service stops)."""
        report, self._report = self._report, None
        if report is not None and report.active():
            report.cancel()
        if self.suppressed:
            self._summarize()
            self.suppressed = 0

    def _summarize(self) -> None:
        raise NotImplementedError


class ServiceLogBudget(_Window):
    """
    The log budget of one service over all its client addresses together:
    a per-address budget alone lets N addresses (127.0.0.0/8, an IPv6
    prefix, forged clients behind a trusted balancer) write N times as
    much.  At most C{limit} lines per C{window} seconds; the rest are counted
    and reported in one line when the window has passed.  Audit lines
    (logins, transfers) do not pass through it (L{LogBudget.audit}).
    """

    __slots__ = ("service",)

    def __init__(
        self, log: Logger, clock: IReactorTime, service: str, limit: int = SERVICE_LOG_LIMIT,
        window: float = SESSION_LOG_WINDOW,
    ) -> None:
        super().__init__(log, clock, limit, window)
        self.service = service

    def allow(self, events: int = 1) -> bool:
        """May one more line be written now?  If not, C{events} are counted for the summary line."""
        return self._take(events)

    def _summarize(self) -> None:
        self._log.info(
            "{service}: {count} further events suppressed (at most {limit} per {window}s from all addresses together)",
            service=self.service, count=self.suppressed, limit=self.limit, window=self.window,
        )


class LogBudget(_Window):
    """
    The log budget of one client address: at most C{limit} events per C{window}
    seconds on C{clock}; what is over it is counted and reported in one line
    when the window has passed (a timer, started by the first suppressed
    event), or when the budget is forgotten (L{close}).  Not when a session
    ends: the budget is the address's, and a client that reconnects in a
    loop would otherwise write one summary line per session.

    Three kinds of line (docs/security.md, "Logging"): L{emit}, an event a
    client can repeat at no cost (a refused command), counted here and
    within the service's budget; L{audit}, an event that cost the client
    real work (a login, a transfer), counted here but never suppressed by
    the service's budget; L{sessionLine}, a session's connect or close line,
    not counted while the address has budget left, suppressed and counted
    once it is spent (so a reconnect loop is bounded too).
    """

    __slots__ = ("address", "_service")

    def __init__(
        self, log: Logger, clock: IReactorTime, limit: int = SESSION_LOG_LIMIT, window: float = SESSION_LOG_WINDOW,
        address: str = "", service: ServiceLogBudget | None = None,
    ) -> None:
        """
        @param address: the key of the address whose budget this is (for the summary line).
        @param service: the budget of all addresses together, if any.
        """
        super().__init__(log, clock, limit, window)
        self.address = loggable(address)
        self._service = service

    def emit(self, level: LogLevel, format: str, peer: str, **kwargs: Any) -> None:
        """Log C{format} at C{level} (C{peer} and C{kwargs} already L{loggable}) if both budgets allow."""
        if self._take():
            self._write(level, format, peer, True, kwargs)

    def audit(self, level: LogLevel, format: str, peer: str, **kwargs: Any) -> None:
        """As L{emit}, for a line the service's budget never suppresses (a login, a transfer)."""
        if self._take():
            self._write(level, format, peer, False, kwargs)

    def sessionLine(self, level: LogLevel, format: str, peer: str, **kwargs: Any) -> None:
        """A session's connect or close line: free while the address has budget left, then counted like the rest."""
        self._roll()
        if self._count < self.limit:
            self._write(level, format, peer, True, kwargs)
        else:
            self._suppress()

    def _write(self, level: LogLevel, format: str, peer: str, budgeted: bool, kwargs: dict[str, Any]) -> None:
        if budgeted and self._service is not None and not self._service.allow():
            return
        self._log.emit(level, format, peer=peer, **kwargs)

    def _summarize(self) -> None:
        # One per address per window, but addresses are many: within the service's budget
        # (what it suppresses is counted there, so no event goes uncounted).
        if self._service is None or self._service.allow(self.suppressed):
            self._log.info(
                "{count} further events from {peer} suppressed (at most {limit} per {window}s from one address)",
                count=self.suppressed, peer=self.address, limit=self.limit, window=self.window,
            )


#: Addresses whose log budgets are remembered at most (the least recently seen forgotten first).
MAX_BUDGETS = 10_000


class LogBudgets:
    """
    One L{LogBudget} per client address, shared by all its sessions: a
    client that reconnects must not get a fresh budget each time (it wrote
    about 518 KB/s of log that way: connect, 21 FILEs, QUIT, again).
    Bounded like the login penalties: at most C{maxAddresses} budgets.
    """

    def __init__(
        self, log: Logger, clock: IReactorTime, maxAddresses: int = MAX_BUDGETS, service: str = "files",
        serviceLimit: int = SERVICE_LOG_LIMIT, limit: int = SESSION_LOG_LIMIT,
    ) -> None:
        """
        @param service: the service's name, for the summary line of its budget over all addresses.
        @param limit: an address's budget per window (--log-budget), for the budgets made from now on.
        """
        self._log = log
        self.limit = limit
        self._clock = clock
        self.maxAddresses = maxAddresses
        self._budgets: OrderedDict[str, LogBudget] = OrderedDict()
        #: The budget of all addresses together.
        self.service = ServiceLogBudget(log, clock, service, serviceLimit)

    def __len__(self) -> int:
        return len(self._budgets)

    def close(self) -> None:
        """The service stops: report what every budget still has suppressed."""
        for budget in self._budgets.values():
            budget.close()
        self.service.close()

    def forKey(self, key: str) -> LogBudget:
        budget = self._budgets.pop(key, None)
        if budget is None:
            budget = LogBudget(self._log, self._clock, self.limit, address=key, service=self.service)
        self._budgets[key] = budget  # most recently seen last
        while len(self._budgets) > self.maxAddresses:
            _, forgotten = self._budgets.popitem(last=False)
            forgotten.close()
        return budget
