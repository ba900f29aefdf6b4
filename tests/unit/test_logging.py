"""
What reaches the log (docs/security.md, "Logging"; docs/deploy.md,
"Reading the log"): no raw control character from a client in any event's
text, one peer format, refused tree commands once each within the
address's budget, and two lines per session (connect, close with its reason).
"""

from __future__ import annotations

import re

import pytest
from twisted.internet.address import IPv6Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from echofile.eventlog import SERVICE_LOG_LIMIT, SESSION_LOG_LIMIT, SESSION_LOG_WINDOW
from echofile.text import UNSAFE
from support import PASSWORD, connect, connectHalfClosing, drainTransfer, makeFilesFactory, replies

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
    assert any(re.match(r"files: \S+ \(\S+\) sent \S*notes\.txt ", text) for text in formatted)  # the FILE was logged
    assert any(re.match(r"files: \S+ \(\S+\) FILE missing\S* refused: ", text) for text in formatted)  # so its refusal
    assert any(re.match(r"files: \S+ \(\S+\) LIST \S+ refused: ", text) for text in formatted)
    assert any("connection from" in text for text in formatted)
    assert any(re.match(r"files: \S+ closed \(QUIT\) after ", text) for text in formatted)
    for text in formatted:
        assert UNSAFE.search(text) is None, repr(text)


def test_pipelined_commands_log_at_most_the_budget(served, logged):
    """100 pipelined FILEs (transfers log at info) and refused ones: at most the budget, then one line."""
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    logged.clear()
    protocol.dataReceived(b"FILE notes.txt\r\nFILE nope\r\nBOGUS\r\nLIST nope\r\n" * 100)
    pump(protocol, transport)
    assert replies(transport)[-1] == b"!Directory nope could not be opened."
    info = infoEvents(logged)
    assert len(info) == SESSION_LOG_LIMIT - 1, texts(info)[-3:]  # the login line took one
    assert "files: 127.0.0.1:40000 (guest) FILE nope refused: no such file or directory" in texts(info)
    protocol.connectionLost(None)
    info = infoEvents(logged)
    assert len(info) == SESSION_LOG_LIMIT - 1  # the budget is spent: "closed" is counted, not written
    clock.advance(SESSION_LOG_WINDOW)
    info = infoEvents(logged)
    assert len(info) == SESSION_LOG_LIMIT  # the summary line once the window has passed
    # Each round: a FILE sent, a FILE and a LIST refused (BOGUS is no tree command: not logged); then "closed".
    assert formatEvent(info[-1]).startswith(
        f"{3 * 100 - (SESSION_LOG_LIMIT - 1) + 1} further events from 127.0.0.1 suppressed"
    )


def test_budget_refills_after_the_window(served, logged):
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    logged.clear()
    protocol.dataReceived(b"FILE notes.txt\r\n" * (SESSION_LOG_LIMIT + 5))
    pump(protocol, transport)
    assert len(infoEvents(logged)) == SESSION_LOG_LIMIT - 1  # the login line took one
    logged.clear()
    clock.advance(SESSION_LOG_WINDOW)  # the window has passed: its summary line
    protocol.dataReceived(b"FILE notes.txt\r\n")
    pump(protocol, transport)
    formatted = texts(infoEvents(logged))
    assert len(formatted) == 2 and formatted[0].startswith("6 further events from 127.0.0.1 suppressed")
    assert formatted[1].startswith("files: 127.0.0.1:40000 (guest) sent ")


def test_refused_tree_commands_are_logged_once_each_then_budgeted(served, logged):
    """
    Issue 15: a refused FILE/RESUME/HASH/LIST is one info line with why;
    other failing lines (no command, a refused USER, bad UTF-8) are not
    logged; a loop of them stays within the address's budget.
    """
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    logged.clear()
    protocol.dataReceived(b"BOGUS\r\nFILE x\r\nUSER bad name\r\n\xff\xfe\r\n")
    assert texts(infoEvents(logged)) == ["files: 127.0.0.1:40000 FILE x refused: not logged in"]
    protocol.dataReceived(b"USER guest\r\nAUTH " + PASSWORD.encode() + b"\r\n")
    logged.clear()
    refusals = {
        b"FILE missing.txt": "files: 127.0.0.1:40000 (guest) FILE missing.txt refused: no such file or directory",
        b"FILE": "files: 127.0.0.1:40000 (guest) FILE refused: usage",
        b"FILE docs": "files: 127.0.0.1:40000 (guest) FILE docs refused: not a regular file",
        b"FILE ../x": "files: 127.0.0.1:40000 (guest) FILE ../x refused: "
                      "not served (outside the root, hidden or unclean, or the server's own file)",
        b"RESUME 99 notes.txt": "files: 127.0.0.1:40000 (guest) RESUME 99 notes.txt refused: offset past the end",
        b"RESUME x": "files: 127.0.0.1:40000 (guest) RESUME x refused: usage",
        b"HASH missing.txt": "files: 127.0.0.1:40000 (guest) HASH missing.txt refused: no such file or directory",
        b"LIST nope": "files: 127.0.0.1:40000 (guest) LIST nope refused: no such file or directory",
    }
    for line, expected in refusals.items():
        logged.clear()
        protocol.dataReceived(line + b"\r\n")
        assert replies(transport)[-1].startswith(b"!"), line
        assert texts(infoEvents(logged)) == [expected]  # once, at info
    logged.clear()
    protocol.dataReceived(b"FILE missing.txt\r\nBOGUS\r\n" * 100)
    left = SESSION_LOG_LIMIT - len(refusals) - 2  # what is left of this window's budget (after FILE x and the login)
    assert len(infoEvents(logged)) == left
    protocol.dataReceived(b"QUIT\r\n")
    protocol.connectionLost(None)
    clock.advance(SESSION_LOG_WINDOW)
    formatted = texts(infoEvents(logged))
    assert not any(" closed (QUIT) after " in text for text in formatted)  # the budget was spent: counted
    assert formatted[-1].startswith(f"{100 - left + 1} further events from 127.0.0.1 ")


def test_refused_commands_across_reconnects_stay_within_the_budget(served, logged):
    """A client looping connect, refused FILEs, QUIT does not get a fresh budget per connection."""
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    for port in range(40000, 40010):
        protocol, transport = connect(factory, port=port)
        protocol.dataReceived(b"FILE x\r\n" * 10 + b"QUIT\r\n")
        protocol.connectionLost(None)
    refused = [e for e in logged if "refused" in e.get("log_format", "")]
    assert len(refused) == SESSION_LOG_LIMIT
    clock.advance(SESSION_LOG_WINDOW)
    summaries = [e for e in logged if "suppressed" in e.get("log_format", "")]
    # Once the budget was spent (in the second session, before its close line), connect and close lines are counted too.
    assert sum(e["count"] for e in summaries) == 10 * 10 - SESSION_LOG_LIMIT + 1 + 8 * 2


def test_reconnecting_writes_one_summary_line_per_window_not_per_session(served, logged):
    """
    A client looping connect, 25 refused FILEs, QUIT from one address: the
    budget is the address's, so its summary line comes once per window (with
    every suppressed event counted), not once per session (it was one line
    per session: about 100 KiB/s of log from one address's reconnect loop).
    """
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    for port in range(40000, 40050):
        protocol, transport = connect(factory, port=port)
        protocol.dataReceived(b"FILE x\r\n" * 25 + b"QUIT\r\n")
        protocol.connectionLost(None)
        clock.advance(0.1)
    summaries = [e for e in logged if "suppressed" in e.get("log_format", "")]
    assert summaries == []  # the window (60 s) has not passed yet
    clock.advance(SESSION_LOG_WINDOW)
    summaries = [e for e in logged if "suppressed" in e.get("log_format", "")]
    # The first session's close line and every later session's connect and close lines are counted too.
    assert [e["count"] for e in summaries] == [50 * 25 - SESSION_LOG_LIMIT + 1 + 49 * 2]
    clock.advance(10 * SESSION_LOG_WINDOW)
    assert len([e for e in logged if "suppressed" in e.get("log_format", "")]) == 1  # nothing more to report


def test_suppressed_counts_are_reported_when_the_service_stops(served, logged):
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    protocol, transport = connect(factory)
    protocol.dataReceived(b"FILE x\r\n" * (SESSION_LOG_LIMIT + 3) + b"QUIT\r\n")
    protocol.connectionLost(None)
    factory.doStart()
    factory.doStop()
    summaries = [formatEvent(e) for e in logged if "suppressed" in e.get("log_format", "")]
    # The three refusals over the budget and the session's close line.
    assert len(summaries) == 1 and summaries[0].startswith("4 further events from 127.0.0.1 suppressed")
    assert clock.getDelayedCalls() == [] or all(not c.active() for c in clock.getDelayedCalls())


def test_many_addresses_together_stay_within_a_service_wide_budget(served, logged):
    """
    500 addresses, each one session of 25 refused FILEs within one window
    (rotating 127.x.y.z sources, an IPv6 prefix, forged clients behind a
    trusted balancer): the lines of all of them together are bounded by the
    service's budget (SERVICE_LOG_LIMIT a window, as the refusals before a
    session are in ConnectionLimiter), not by the number of addresses (per
    address alone they wrote 500 x 21 lines); the rest are counted, in one
    service-wide line per window.
    """
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    for n in range(500):
        protocol, transport = connect(factory, host=f"127.0.{n // 250}.{n % 250 + 1}")
        protocol.dataReceived(b"FILE x\r\n" * 25 + b"QUIT\r\n")
        protocol.connectionLost(None)
    assert len(logged) <= SERVICE_LOG_LIMIT  # every line: connect, refused and close of all addresses together
    assert 500 * (1 + SESSION_LOG_LIMIT) > SERVICE_LOG_LIMIT  # what the addresses' own budgets would have let through
    clock.advance(SESSION_LOG_WINDOW)
    serviceWide = [e for e in logged if "from all addresses together" in e.get("log_format", "")]
    assert len(serviceWide) == 1
    summaries = [e for e in logged if "suppressed" in e.get("log_format", "")]
    written = [e for e in logged if "suppressed" not in e.get("log_format", "")]
    assert len(written) == SERVICE_LOG_LIMIT
    assert len(written) + sum(e["count"] for e in summaries) == 500 * (1 + 25 + 1)  # no line uncounted
    clock.advance(10 * SESSION_LOG_WINDOW)
    assert len([e for e in logged if "from all addresses together" in e.get("log_format", "")]) == 1


def test_audit_lines_are_never_suppressed_by_the_service_wide_budget(served, logged):
    """Logins and transfers cost the client real work: once the service's budget is spent, they are still written."""
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    factory.logBudgets.service.limit = 5
    for n in range(50):
        protocol, transport = connect(factory, host=f"127.0.0.{n + 1}")
        protocol.dataReceived(b"FILE x\r\nAUTH " + PASSWORD.encode() + b"\r\nFILE notes.txt\r\n")
        pump(protocol, transport)
        protocol.dataReceived(b"QUIT\r\n")
        protocol.connectionLost(None)
    formatted = texts(logged)
    assert len([t for t in formatted if " logged in as guest" in t]) == 50
    assert len([t for t in formatted if re.match(r"files: \S+ \(guest\) sent \S*notes\.txt ", t)]) == 50
    assert len([t for t in formatted if " refused: " in t or "connection from" in t or " closed " in t]) == 5
    clock.advance(SESSION_LOG_WINDOW)
    serviceWide = [e for e in logged if "from all addresses together" in e.get("log_format", "")]
    assert [e["count"] for e in serviceWide] == [50 * 3 - 5]  # connect, FILE x refused, close


def test_a_reconnect_loop_from_one_address_is_bounded_per_window(served, logged):
    """
    A connect/AUTH/QUIT loop from one address: each login counts in the
    address's budget; once it is spent, the sessions' connect, login and close
    lines are counted, not written (they were 5 lines a session, chat's
    joined/left at debug included: ~300 KiB/s on loopback).
    """
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    for port in range(40000, 40200):
        protocol, transport = connect(factory, port=port)
        protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\nQUIT\r\n")
        protocol.connectionLost(None)
    assert len(logged) <= 3 * SESSION_LOG_LIMIT + 1, len(logged)  # every event, debug included: twistd writes them all
    written = len(logged)
    clock.advance(SESSION_LOG_WINDOW)
    summaries = [e for e in logged if "suppressed" in e.get("log_format", "")]
    assert len(summaries) == 1 and written + summaries[0]["count"] == 200 * 3  # connect, logged in, closed


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


# -- the peer format ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, text",
    [
        (("127.0.0.1", 40112), "127.0.0.1:40112"),
        (("::1", 4711), "[::1]:4711"),
        (("2001:db8::7", 1), "[2001:db8::7]:1"),
        (("uid:1000",), "uid:1000"),
        (("192.0.2.9", 5000, "127.0.0.1:40112"), "192.0.2.9:5000 (via PROXY from 127.0.0.1:40112)"),
        (("\x1b[2Jx", 1), "?[2Jx:1"),
    ],
)
def test_peer_text(args, text):
    from echofile.eventlog import peerText

    assert peerText(*args) == text


@pytest.mark.parametrize("host, port, text", [
    ("::ffff:127.0.0.1", 4000, "127.0.0.1:4000"),  # a dual-stack listener's IPv4 client, not [::ffff:127.0.0.1]:4000
    ("::1", 4711, "[::1]:4711"),  # IPv6 in brackets
])
def test_ipv6_peers_are_logged_in_the_one_format(served, logged, host, port, text):
    factory = makeFilesFactory(served, Clock())
    peer = IPv6Address("TCP", host, port)
    protocol = factory.buildProtocol(peer)
    protocol.makeConnection(StringTransport(peerAddress=peer))
    assert texts(logged) == [f"files: connection from {text}"]


# -- two lines per session: the connect line and one close line with its reason -----------------


def _quit(protocol, transport, clock):
    protocol.dataReceived(b"QUIT\r\n")


def _halfClose(protocol, transport, clock):
    protocol.readConnectionLost()


def _idle(protocol, transport, clock):
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    clock.advance(301)


def _loginTimeout(protocol, transport, clock):
    clock.advance(61)


def _longLine(protocol, transport, clock):
    protocol.dataReceived(b"x" * 5000)


def _shutdown(protocol, transport, clock):
    protocol.shutdown()


def _threeFailures(protocol, transport, clock):
    for _ in range(3):
        protocol.dataReceived(b"AUTH wrong\r\n")
        clock.advance(1.5)


@pytest.mark.parametrize(
    "end, why",
    [
        (_quit, "QUIT"), (_halfClose, "client finished sending"), (_idle, "idle timeout"),
        (_loginTimeout, "login timeout"), (_longLine, "line too long"), (_shutdown, "server shutdown"),
        (_threeFailures, "Too many failed attempts"), (None, "client closed"),
    ],
    ids=["quit", "half-close", "idle", "login-timeout", "long-line", "shutdown", "three-failures", "client-closed"],
)
def test_a_session_writes_a_connect_and_one_close_line(served, logged, end, why):
    clock = Clock()
    factory = makeFilesFactory(served, clock, idleTimeout=300, loginTimeout=60)
    protocol, transport = connectHalfClosing(factory)
    if end is not None:
        end(protocol, transport, clock)
    clock.advance(2)
    protocol.connectionLost(None)
    lifecycle = [t for t in texts(infoEvents(logged)) if "logged in" not in t and "failed to log in" not in t]
    assert lifecycle[0] == "files: connection from 127.0.0.1:40000"
    assert re.fullmatch(
        rf"files: 127\.0\.0\.1:40000 closed \({re.escape(why)}\) after [0-9.]+s", lifecycle[1],
    ), lifecycle
    assert len(lifecycle) == 2, lifecycle


def test_close_line_after_a_reset_and_with_transfers(served, logged):
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\nFILE notes.txt\r\nFILE binary.bin\r\n")
    pump(protocol, transport)
    clock.advance(2.5)
    protocol.connectionLost(Failure(ConnectionLost()))
    assert texts(infoEvents(logged))[-1] == (
        "files: 127.0.0.1:40000 closed (connection lost) after 2.500s; files sent: 2 (1036 bytes)"
    )


def test_stalled_transfer_is_one_close_line(served, logged):
    """A reader that stops reading inside a body is cut off: the close line says so, no line of its own."""
    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock, idleTimeout=30))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\nFILE binary.bin\r\n")
    clock.advance(31)  # the client never read the body
    assert transport.disconnected
    protocol.connectionLost(Failure(ConnectionLost()))
    formatted = texts(infoEvents(logged))
    assert formatted[-1].startswith("files: 127.0.0.1:40000 closed (stalled during a transfer, aborted) after ")
    assert not any("stalled" in t for t in formatted[:-1])


def test_a_long_client_value_is_logged_shortened(served, logged):
    """
    A refused FILE logged its whole argument (up to --max-line, 4 KB): 25 of
    them per session from rotating addresses wrote about 11 MiB/s of log
    (benchmarks/logflood.py --name-bytes 4000 --only many).  A client value
    is logged up to MAX_LOGGED_CHARS, then how much was left out.
    """
    from echofile.eventlog import MAX_LOGGED_CHARS, loggable

    clock = Clock()
    protocol, transport = connect(makeFilesFactory(served, clock))
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    logged.clear()
    name = "n" * 4000
    protocol.dataReceived(f"FILE {name}\r\n".encode())
    assert replies(transport)[-1] == f"!File {name} could not be opened.".encode()  # the reply is not shortened
    [line] = texts(infoEvents(logged))
    shown = "n" * MAX_LOGGED_CHARS + f"... ({4000 - MAX_LOGGED_CHARS} more characters)"
    assert line.startswith(f"files: 127.0.0.1:40000 (guest) FILE {shown} refused: ")
    assert len(line) < MAX_LOGGED_CHARS + 120
    assert loggable("x" * MAX_LOGGED_CHARS) == "x" * MAX_LOGGED_CHARS  # what fits is left whole
    assert loggable("\x1b" * (MAX_LOGGED_CHARS + 1)) == "?" * MAX_LOGGED_CHARS + "... (1 more characters)"
