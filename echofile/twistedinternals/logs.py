"""
The observers of a log publisher, the file of a file observer and the lock
of a log file: for twistd's text log (L{echofile.logformat}).
"""

from __future__ import annotations

import io
import threading
from typing import Any

from twisted.python.logfile import BaseLogFile, LogFile


def logObservers(publisher: Any) -> list[Any]:
    """The observers a C{LogPublisher} forwards to, in order (twistd's file observer among the global one's)."""
    return list(publisher._observers)


def observerFile(observer: Any) -> Any:
    """The file a C{FileLogObserver} writes to (twistd's: a C{twisted.python.logfile.LogFile})."""
    return getattr(observer, "_outFile", None)


def nativeLogFileLock(logFile: object) -> bool:
    """
    Give a C{twisted.python.logfile} file a C{threading.RLock}: its C{write}
    and C{rotate} are synchronized by C{twisted.python.threadable} with a
    pure-Python RLock (C{XLock}), about 3,000 instructions per log line;
    the C one is the same reentrant lock.  Called at start-up, before any
    other thread writes to the log.  False for anything else.
    """
    if not isinstance(logFile, BaseLogFile):
        return False
    logFile.__dict__["_threadable_lock"] = threading.RLock()
    return True


class LogFileLines:
    """
    What a C{FileLogObserver} writes one line to, in place of twistd's
    C{LogFile}: the same rotation check, bytes, size count and lock, in one
    Python call.  C{LogFile.write} took five (threadable's wrapper and its
    C{_synchPre}, C{LogFile.write}, C{BaseLogFile.write}, C{shouldRotate})
    and C{flush} three more to flush a file opened unbuffered.  Still one
    C{write} system call per line; C{rotate} (SIGUSR1) stays the C{LogFile}'s.
    """

    __slots__ = ("logFile", "_lock")

    def __init__(self, logFile: LogFile) -> None:
        self.logFile = logFile
        self._lock = logFile.__dict__["_threadable_lock"]

    def write(self, data: str | bytes) -> None:
        logFile = self.logFile
        with self._lock:
            if logFile.rotateLength and logFile.size >= logFile.rotateLength:  # LogFile.shouldRotate
                logFile.flush()
                logFile.rotate()
            logFile._file.write(data.encode("utf8") if isinstance(data, str) else data)
            logFile.size += len(data)  # LogFile.write counts characters, as it always did

    def flush(self) -> None:
        """Nothing to do: C{LogFile} opens its file unbuffered (each C{write} is the system call)."""


def directLogFileLines(observer: Any) -> LogFileLines | None:
    """
    Make the C{FileLogObserver} C{observer} write to its C{LogFile} through
    L{LogFileLines} (after L{nativeLogFileLock}); None, and nothing changed,
    unless its file is exactly a C{LogFile} over an unbuffered C{FileIO}
    (a subclass may rotate or write otherwise).
    """
    logFile = observerFile(observer)
    if type(logFile) is not LogFile or type(getattr(logFile, "_file", None)) is not io.FileIO:
        return None
    if "_threadable_lock" not in logFile.__dict__:
        return None
    lines = LogFileLines(logFile)
    observer._outFile = lines
    return lines


def restoreLogFile(observer: Any, lines: LogFileLines) -> None:
    """Undo L{directLogFileLines}: the observer writes to the C{LogFile} itself again."""
    if getattr(observer, "_outFile", None) is lines:
        observer._outFile = lines.logFile
