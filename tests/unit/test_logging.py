"""
What reaches the log (docs/security.md, "Logging"): no raw control
character from a client in any event's text, per-command events not at
info, and a bounded number of info/warn events per session.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from echofile.eventlog import SESSION_LOG_LIMIT, SESSION_LOG_WINDOW
from echofile.text import UNSAFE
from support import PASSWORD, connect, drainTransfer, makeFilesFactory, replies

#: ESC + CSI sequence, the 8-bit CSI (C1), a bidi override, a line separator, BEL.
NASTY = "x\x1b[31mred\x1b]0;title\x07\x9b2J\u202egnp.\u2028end"


def texts(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


def infoEvents(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("log_level") is not None and e["log_level"] >= LogLevel.info]


def pump(protocol, transport) -> None:
    """Let every pipelined FILE run (what the reactor does for a reading client)."""
    while transport.producer is not protocol and transport.producer is not None:
        drainTransfer(transport)


def test_client_supplied_names_never_reach_the_log_raw(served, logged):
    (served / NASTY).write_bytes(b"never served by name (PROTOCOL.md rev 2), but tried")
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    protocol, transport = connect(factory, host="\x1b[2J" + NASTY)  # e.g. from a PROXY header
    for line in (f"AUTH {PASSWORD}", f"USER {NASTY}", f"FILE {NASTY}", f"FILE missing{NASTY}",
                 f"LIST {NASTY}", f"LIST", f"MSG {NASTY} hi", NASTY, "FILE notes.txt"):
        protocol.dataReceived(line.encode("utf-8") + b"\r\n")
        clock.advance(1)
        pump(protocol, transport)
    protocol.dataReceived(b"QUIT\r\n")
    protocol.connectionLost(None)
    formatted = texts(logged)
    assert any(text.startswith("files: sent ") for text in formatted)  # the FILE was logged
    assert any("connection from" in text for text in formatted)
    for text in formatted:
        assert UNSAFE.search(text) is None, repr(text)


def test_pipelined_commands_log_at_most_the_budget(served, logged):
    """100 pipelined FILEs (transfers log at info) and failing commands: at most the budget, then one line."""
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    logged.clear()
    protocol.dataReceived(b"FILE notes.txt\r\nFILE nope\r\nBOGUS\r\nLIST nope\r\n" * 100)
    pump(protocol, transport)
    assert replies(transport)[-1] == b"!Directory nope could not be opened."
    info = infoEvents(logged)
    assert len(info) == SESSION_LOG_LIMIT, texts(info)[-3:]
    protocol.connectionLost(None)
    info = infoEvents(logged)
    assert len(info) == SESSION_LOG_LIMIT + 2  # the summary line, then "closed"
    assert formatEvent(info[-2]).startswith(f"{100 - SESSION_LOG_LIMIT} further events from 127.0.0.1 suppressed")


def test_budget_refills_after_the_window(served, logged):
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    logged.clear()
    protocol.dataReceived(b"FILE notes.txt\r\n" * (SESSION_LOG_LIMIT + 5))
    pump(protocol, transport)
    assert len(infoEvents(logged)) == SESSION_LOG_LIMIT
    clock.advance(SESSION_LOG_WINDOW)
    logged.clear()
    protocol.dataReceived(b"FILE notes.txt\r\n")
    pump(protocol, transport)
    formatted = texts(infoEvents(logged))
    assert len(formatted) == 2 and formatted[0].startswith("5 further events from 127.0.0.1 suppressed")
    assert formatted[1].startswith("files: sent ")


def test_failing_commands_are_not_logged_at_info(served, logged):
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    logged.clear()
    protocol.dataReceived(b"BOGUS\r\nFILE x\r\nUSER bad name\r\n\xff\xfe\r\n" * 50)
    assert infoEvents(logged) == []


def test_reconnecting_does_not_renew_the_log_budget(served):
    """A client looping connect, 21 x FILE, QUIT wrote ~518 KB/s of log while each session had a budget of its own."""
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        for port in range(40000, 40010):  # ten sessions from one address, one after the other
            protocol, transport = connect(factory, port=port)
            for _ in range(3):  # three failed logins: the session is closed after the third
                protocol.dataReceived(b"USER nobody\r\nAUTH wrong\r\n")
                clock.advance(1.5)
            protocol.connectionLost(None)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    failures = [e for e in logged if "failed to log in" in e.get("log_format", "")]
    assert len(failures) <= SESSION_LOG_LIMIT


def test_log_budgets_are_bounded_in_number():
    from twisted.logger import Logger

    from echofile.eventlog import LogBudgets

    budgets = LogBudgets(Logger(), Clock(), maxAddresses=2)
    first = budgets.forKey("192.0.2.1")
    budgets.forKey("192.0.2.2")
    assert budgets.forKey("192.0.2.1") is first  # shared, and now the most recently seen
    budgets.forKey("192.0.2.3")
    assert len(budgets) == 2 and budgets.forKey("192.0.2.1") is first  # .2 was forgotten, not .1
