"""
What a file-protocol session writes to the log, and through which budget
(L{echofile.eventlog}): its connect and close lines, the events a client can
repeat at no cost, and the audit lines of real work (docs/deploy.md,
"Reading the log").  A mixin of L{echofile.session.LineSession}, which
gives it the admission (the peer's text), the peer's key and the factory
(the budgets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from echofile.eventlog import LogBudget, SessionLogger
from echofile.proxy import HealthCheck

if TYPE_CHECKING:
    from echofile.admission import Admission
    from echofile.files import FilesFactory

#: A session's close line (docs/deploy.md, "Reading the log"), and with what it sent, if it sent a file.
_CLOSED = "files: {peer} closed ({why}) after {duration:.3f}s"
_CLOSED_WITH_FILES = _CLOSED + "; files sent: {files} ({bytes} bytes)"


class SessionLog:
    """The log lines of one session, named by its peer and counted in its address's budget."""

    _log = SessionLogger()
    #: Why the session ended, for its close line (the first reason given wins).
    _endedBecause: str | None = None
    #: Bodies sent whole (FILE, RESUME) and their bytes, for the close line.
    _filesSent = 0
    _bytesSent = 0

    factory: "FilesFactory"
    _admission: "Admission | None"
    _peerAddress: IAddress | None
    _peerKey: str
    _logBudget: LogBudget | None

    def _because(self, why: str) -> None:
        """Note why the session ends (for its close line), unless a reason was given already."""
        if self._endedBecause is None:
            self._endedBecause = why

    def _logClosed(self, reason: Failure | None) -> None:
        """The session's one close line: how it ended, how long it lasted, what it sent."""
        why = self._endedBecause
        if why is None:  # nothing on our side ended it: the client did
            # (isinstance, not Failure.check: that spells out the class names of the error's MRO per call)
            why = "client closed" if reason is None or isinstance(reason.value, ConnectionDone) else "connection lost"
        assert self._admission is not None
        healthCheck = isinstance(self._peerAddress, HealthCheck)
        emit = self._log.emit if healthCheck else self._budget().sessionLine
        emit(
            LogLevel.debug if healthCheck else LogLevel.info, _CLOSED_WITH_FILES if self._filesSent else _CLOSED,
            peer=self._peer, why=why, duration=self._admission.elapsed(), files=self._filesSent, bytes=self._bytesSent,
        )

    @property
    def _peer(self) -> str:
        """The peer as the log names it (L{echofile.eventlog.peerText}, made by the admission)."""
        admission = self._admission
        return admission.peer if admission is not None else ""

    def _budget(self) -> LogBudget:
        """The log budget of this session's address, which all of that address's sessions share."""
        if self._logBudget is None:
            self._logBudget = self.factory.logBudgets.forKey(self._peerKey)
        return self._logBudget

    def _event(self, level: LogLevel, format: str, **kwargs: Any) -> None:
        """
        An info/warn event the client can make us repeat at no cost (a
        refused command): through its address's log budget and the
        service's (L{echofile.eventlog}).
        """
        self._budget().emit(level, format, peer=self._peer, **kwargs)

    def _audit(self, level: LogLevel, format: str, **kwargs: Any) -> None:
        """
        An event that cost the client real work (a login, a transfer):
        through its address's log budget, never suppressed by the service's.
        """
        self._budget().audit(level, format, peer=self._peer, **kwargs)
