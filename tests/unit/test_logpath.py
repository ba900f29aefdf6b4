"""
The path of one log line under twistd (issue 16, round 3): the same
events and the same text, for less work per line.
"""

from __future__ import annotations

from twisted.logger import Logger, LogLevel, LogPublisher

from echofile.eventlog import SessionLogger


def _events(logger_class: type, *args, **kwargs) -> list[dict]:
    events: list[dict] = []
    logger = logger_class(namespace="echofile.test", source="src", observer=LogPublisher(events.append))
    logger.emit(*args, **kwargs)
    return events


def _comparable(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in ("log_time", "log_logger")}


def test_session_logger_emits_what_twisteds_logger_emits() -> None:
    ours = _events(SessionLogger, LogLevel.info, "files: connection from {peer}", peer="127.0.0.1:1")
    theirs = _events(Logger, LogLevel.info, "files: connection from {peer}", peer="127.0.0.1:1")
    assert len(ours) == len(theirs) == 1
    assert _comparable(ours[0]) == _comparable(theirs[0])
    assert set(ours[0]) == set(theirs[0])
    assert isinstance(ours[0]["log_time"], float) and isinstance(ours[0]["log_logger"], SessionLogger)


def test_session_logger_keeps_twisteds_answer_to_a_bad_level() -> None:
    for bad in ("info", None, {}):
        ours, theirs = _events(SessionLogger, bad, "x"), _events(Logger, bad, "x")
        assert [e["log_level"] for e in ours] == [e["log_level"] for e in theirs] == [LogLevel.critical]
        assert [e["log_format"] for e in ours] == [e["log_format"] for e in theirs]


def test_session_logger_traces_like_twisteds() -> None:
    events: list[dict] = []
    publisher = LogPublisher(events.append)
    logger = SessionLogger(namespace="echofile.test", observer=publisher)
    trace: list = []
    logger.emit(LogLevel.debug, "traced", log_trace=trace)
    assert trace == [(logger, publisher), (publisher, events.append)]


def test_a_sessions_lines_go_through_the_session_logger() -> None:
    from echofile.files import FileSession

    assert type(FileSession._log) is SessionLogger
    assert FileSession._log.namespace == "echofile.files.FileSession"  # the [system] twistd writes is unchanged
