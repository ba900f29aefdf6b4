"""
twistd's log lines, the same text for less work.

``twistd`` writes every event through C{textFileLogObserver}: per line it
builds a timezone and a datetime for the timestamp and runs C{strftime},
then formats the message with Python's C{string.Formatter} (a Python-level
parser) around a mapping that wraps every value.  That was about half of
the server's work for a new files session (its one "connection from" line
cost more instructions than the whole session of a minimal Twisted server).

L{classicLine} writes the text C{formatEventAsClassicLogText} would, byte
for byte: the timestamp formatted once per second (it has one-second
resolution), the message by C{str.format_map} (the same syntax and the
same conversions).  Anything unusual (a failure, a flattened event, a
C{"()"} call in the format, a format that fails) goes to Twisted's own
formatter.  L{FasterTextLog} gives it to the text-file observers twistd
set up, and only to those whose output it reproduces on probe events:
another C{--logger}, syslog or a different time format are left alone.
Their log file's lock becomes the C C{RLock} (the same lock, without the
Python of Twisted's C{XLock} per line), and a C{LogFile} is written through
C{twistedinternals.LogFileLines} (the same bytes, rotation and lock in one
call instead of eight).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import (
    FileLogObserver, LogLevel, LogPublisher, formatEventAsClassicLogText, globalLogPublisher, timeFormatRFC3339,
)
from twisted.logger import _format as twistedFormat  # formatTime looked up per call, so tests can count it

from echofile.twistedinternals import (
    LogFileLines, directLogFileLines, logObservers, nativeLogFileLock, observerFile, restoreLogFile,
)

LogEvent = dict[str, Any]


class SecondClock:
    """RFC 3339 timestamps as Twisted formats them, computed once per second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second: int | None = None
        self._text = "-"

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when // 1)
        if second != self._second:
            self._text = twistedFormat.formatTime(when, timeFormatRFC3339)
            self._second = second
        return self._text


def _twisted(event: LogEvent, clock: SecondClock) -> str | None:
    return formatEventAsClassicLogText(event, formatTime=clock)


def makeClassicLine() -> Callable[[LogEvent], str | None]:
    """A formatter with its own timestamp cache: the text of twistd's C{textFileLogObserver}."""
    clock = SecondClock()

    def classicLine(event: LogEvent) -> str | None:
        format = event.get("log_format")
        if type(format) is not str or "()" in format or "log_failure" in event or "log_flattened" in event:
            return _twisted(event, clock)
        try:
            text = format.format_map(event)
            system = event.get("log_system")
            if system is None:
                level = event.get("log_level")
                system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
            else:
                system = str(system)
        except Exception:  # Twisted's formatter says what went wrong, its own way
            return _twisted(event, clock)
        if not text:
            return None
        return f"{clock(event.get('log_time'))} [{system}] {text}".replace("\n", "\n\t") + "\n"

    return classicLine


#: Events on which a text-file observer must already write what L{makeClassicLine}'s formatter writes.
PROBES: tuple[LogEvent, ...] = (
    {"log_format": "probe {peer} {n:>4} {r!r}", "peer": "127.0.0.1", "n": 7, "r": "x", "log_time": 1700000000.25,
     "log_namespace": "echofile.logformat", "log_level": LogLevel.info},
    {"log_format": "probe\nsecond line", "log_time": 1700000001.0, "log_system": "probe"},
)


class FasterTextLog(Service):
    """
    While running, the text-file observers of C{publisher} (twistd's) format
    with L{makeClassicLine}; stopping gives them back their own formatter.
    """

    def __init__(self, publisher: LogPublisher = globalLogPublisher) -> None:
        self._publisher = publisher
        self._replaced: list[tuple[FileLogObserver, Callable[[LogEvent], str | None]]] = []
        self._direct: list[tuple[FileLogObserver, LogFileLines]] = []

    def startService(self) -> None:
        super().startService()
        for observer in logObservers(self._publisher):
            if not isinstance(observer, FileLogObserver):
                continue
            original, faster = observer.formatEvent, makeClassicLine()
            if all(original(dict(probe)) == faster(dict(probe)) for probe in PROBES):
                observer.formatEvent = faster
                nativeLogFileLock(observerFile(observer))  # the same lock, in C (kept after stopService)
                self._replaced.append((observer, original))
                lines = directLogFileLines(observer)
                if lines is not None:
                    self._direct.append((observer, lines))

    def stopService(self) -> None:
        for observer, original in self._replaced:
            observer.formatEvent = original
        self._replaced = []
        for observer, lines in self._direct:
            restoreLogFile(observer, lines)
        self._direct = []
        super().stopService()
