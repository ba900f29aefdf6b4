"""
The observers of a log publisher, the file of a file observer and the lock
of a log file: for twistd's text log (L{echofile.logformat}).
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.python.logfile import BaseLogFile


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
