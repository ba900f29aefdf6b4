"""echofile.logformat: twistd's log text, byte for byte, for less work."""

from __future__ import annotations

import io

import pytest
from twisted.logger import LogLevel, LogPublisher, Logger, formatTime, textFileLogObserver
from twisted.logger import _format as twistedFormat
from twisted.python.failure import Failure

from echofile.logformat import FasterTextLog, makeClassicLine


class Thing:
    size = 42

    def __repr__(self) -> str:
        return "<Thing>"


def twistdText(event: dict) -> str | None:
    """What twistd's own observer (textFileLogObserver) writes for C{event}."""
    out = io.StringIO()
    textFileLogObserver(out)(dict(event))
    return out.getvalue() or None


def failed() -> Failure:
    try:
        1 / 0
    except ZeroDivisionError:
        return Failure()


T = 1764633600.75
EVENTS = [
    {"log_format": "files: connection from {peer}", "peer": "127.0.0.1", "log_namespace": "echofile.files.FileSession",
     "log_level": LogLevel.info, "log_time": T},
    {"log_format": "{a:>8}|{b!r}|{c.size}|{d[0]}", "a": "x", "b": "y", "c": Thing(), "d": [3], "log_time": T + 1},
    {"log_format": "two\nlines {x}", "x": "and\nthree", "log_system": "-", "log_time": T},
    {"log_format": "no time, no level"},
    {"log_format": "missing {key}", "log_time": T, "log_level": LogLevel.warn},
    {"log_format": "bad spec {n:Q}", "n": 1, "log_time": T},
    {"log_format": "a call {f()}", "f": lambda: "called", "log_time": T},
    {"log_format": "failed", "log_failure": failed(), "log_time": T, "log_level": LogLevel.critical},
    {"log_format": b"bytes format {x}", "x": 1, "log_time": T},
    {"log_format": "", "log_time": T},
    {"log_time": T, "message": ("legacy",)},
    {"log_format": "system {x}", "x": 1, "log_system": 123, "log_time": T},
    {"log_format": "{log_namespace} {log_level.name}", "log_namespace": "ns", "log_level": LogLevel.debug, "log_time": T},
]


@pytest.mark.parametrize("event", EVENTS, ids=range(len(EVENTS)))
def test_the_same_text_as_twistd(event):
    assert makeClassicLine()(dict(event)) == twistdText(event)


def test_the_timestamp_is_formatted_once_per_second(monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(twistedFormat, "formatTime", lambda when, fmt: calls.append(when) or formatTime(when, fmt))
    line = makeClassicLine()
    texts = [line({"log_format": "x", "log_time": T + i / 100}) for i in range(20)]  # 20 events in one second
    assert len(calls) == 1 and len(set(texts)) == 1
    assert line({"log_format": "x", "log_time": T + 1}) == twistdText({"log_format": "x", "log_time": T + 1})
    assert line({"log_format": "x", "log_time": T}) == twistdText({"log_format": "x", "log_time": T})  # back again
    assert len(calls) == 3


def test_twistds_text_observer_gets_it_while_running_and_back_after():
    out = io.StringIO()
    twistd = textFileLogObserver(out)
    other = textFileLogObserver(io.StringIO(), timeFormat="%H")  # not what we reproduce: left alone
    publisher = LogPublisher(twistd, other, lambda event: None)
    original, otherFormat = twistd.formatEvent, other.formatEvent
    service = FasterTextLog(publisher)
    service.startService()
    assert twistd.formatEvent is not original and other.formatEvent is otherFormat
    Logger(namespace="echofile.test", observer=publisher).info("hello {who}", who="you")
    assert out.getvalue().endswith(" [echofile.test#info] hello you\n")
    service.stopService()
    assert twistd.formatEvent is original


def test_twistds_log_file_gets_the_c_lock_and_keeps_every_line(tmp_path):
    import threading

    from twisted.python.logfile import LogFile

    logFile = LogFile.fromFullPath(str(tmp_path / "twistd.log"))
    twistd = textFileLogObserver(logFile)
    publisher = LogPublisher(twistd)
    service = FasterTextLog(publisher)
    service.startService()
    assert type(logFile._threadable_lock) is type(threading.RLock())
    log = Logger(namespace="echofile.test", observer=publisher)
    for i in range(3):
        log.info("line {i}", i=i)
    service.stopService()
    log.info("after")
    logFile.close()
    lines = (tmp_path / "twistd.log").read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["line 0", "line 1", "line 2", "after"]


def test_twistds_log_file_gets_each_line_in_one_call_with_the_same_bytes(tmp_path, monkeypatch):
    """Under FasterTextLog a LogFile's lines skip LogFile.write's chain of calls; the file is the same."""
    from twisted.python.logfile import LogFile

    texts = ["line {i} caf\u00e9".format(i=i) for i in range(5)]

    def written(directory, faster: bool) -> tuple[bytes, list[str]]:
        directory.mkdir()
        logFile = LogFile("twistd.log", str(directory), rotateLength=60)
        twistd = textFileLogObserver(logFile)
        publisher = LogPublisher(twistd)
        service = FasterTextLog(publisher)
        if faster:
            service.startService()
        for text in texts:
            publisher({"log_format": text, "log_time": T, "log_system": "s"})
        service.stopService()
        publisher({"log_format": "after", "log_time": T, "log_system": "s"})
        logFile.close()
        return (directory / "twistd.log").read_bytes(), sorted(p.name for p in directory.iterdir())

    calls: list[object] = []
    twistdWrite = LogFile.write
    monkeypatch.setattr(LogFile, "write", lambda self, data: calls.append(data) or twistdWrite(self, data))
    plain = written(tmp_path / "plain", faster=False)
    assert len(calls) == 6
    del calls[:]
    faster = written(tmp_path / "faster", faster=True)
    assert calls == [twistdText({"log_format": "after", "log_time": T, "log_system": "s"})]  # only once stopped
    assert faster == plain and len(plain[1]) > 1  # the same bytes, rotated at the same lines
