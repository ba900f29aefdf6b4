"""SAY, MSG, WHO and event delivery, with sessions on StringTransports."""

from __future__ import annotations

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from echofile.chat import EventQueue
from echofile.text import sanitize
from support import connect, drainTransfer, loggedIn, makeFilesFactory, replies


@pytest.fixture
def factory(served):
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice="pw", bob="pw", carol="pw")
    return makeFilesFactory(served, Clock(), checkers=[checker])


def test_chat_needs_login(factory):
    protocol, transport = connect(factory)
    replies(transport)
    protocol.dataReceived(b"SAY hi\r\nMSG bob hi\r\nWHO\r\n")
    assert replies(transport) == [b"!You are not logged in."] * 3


def test_say_reaches_every_other_session(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    alice2, alice2T = loggedIn(factory, "alice", 2)
    bob, bobT = loggedIn(factory, "bob", 3)
    alice.dataReceived(b"SAY hello  there \r\n")
    assert replies(aliceT) == [b"#Said."]
    assert replies(alice2T) == [b"*alice: hello  there"]
    assert replies(bobT) == [b"*alice: hello  there"]


def test_say_usage(factory):
    alice, aliceT = loggedIn(factory, "alice")
    alice.dataReceived(b"SAY\r\nSAY   \r\n")
    assert replies(aliceT) == [b"!Usage: SAY <text>"] * 2


def test_msg_reaches_all_sessions_of_the_user(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    bob1, bob1T = loggedIn(factory, "bob", 2)
    bob2, bob2T = loggedIn(factory, "bob", 3)
    carol, carolT = loggedIn(factory, "carol", 4)
    alice.dataReceived(b"MSG bob psst, a secret\r\n")
    assert replies(aliceT) == [b"#Sent to bob."]
    assert replies(bob1T) == replies(bob2T) == [b"*alice (private): psst, a secret"]
    assert replies(carolT) == []


def test_msg_errors(factory):
    alice, aliceT = loggedIn(factory, "alice")
    alice.dataReceived(b"MSG\r\nMSG bob\r\nMSG nobody hi\r\nMSG ev\x01l hi\r\n")
    assert replies(aliceT) == [
        b"!Usage: MSG <user> <text>",
        b"!Usage: MSG <user> <text>",
        b"!No such user online: nobody.",
        b"!No such user online: ev?l.",
    ]


def test_who_lists_each_user_once_sorted(factory):
    loggedIn(factory, "carol", 1)
    loggedIn(factory, "alice", 2)
    loggedIn(factory, "alice", 3)
    guest, guestT = loggedIn(factory, "guest", 4)
    guest.dataReceived(b"WHO\r\n")
    assert replies(guestT) == [b"#3 users online.", b"alice", b"carol", b"~guest1"]


def test_presence_ends_with_disconnect_and_quit(factory):
    alice, _ = loggedIn(factory, "alice", 1)
    bob, _ = loggedIn(factory, "bob", 2)
    carol, carolT = loggedIn(factory, "carol", 3)
    alice.connectionLost(None)
    bob.dataReceived(b"QUIT\r\n")  # gone from WHO at once, before the socket closes
    carol.dataReceived(b"WHO\r\nMSG bob hi\r\n")
    assert replies(carolT) == [b"#1 users online.", b"carol", b"!No such user online: bob."]


def test_events_wait_for_the_end_of_a_body(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    bob, bobT = loggedIn(factory, "bob", 2)
    bob.dataReceived(b"FILE binary.bin\r\n")
    alice.dataReceived(b"SAY one\r\nMSG bob two\r\n")
    drainTransfer(bobT)
    body = bytes(range(256)) * 4
    assert bobT.value() == (
        b"#Sending binary.bin (1024 bytes).\r\n" + body + b"\r\n#File binary.bin sent successfully.\r\n"
        b"*alice: one\r\n*alice (private): two\r\n"
    )


def test_events_are_not_mixed_into_a_listing(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    alice.dataReceived(b"LIST\r\n")
    data = aliceT.value()
    assert data.count(b"\r\n") == 6 and b"*" not in data


@pytest.mark.parametrize(
    "text, shown",
    [
        (b"hi\r#You are logged in.", b"*alice: hi?#You are logged in."),
        (b"\x1b[2J\x1b]0;pwned\x07", b"*alice: ?[2J?]0;pwned?"),
        ("\u009b31m red \u202egnp.exe".encode(), b"*alice: ?31m red ?gnp.exe"),
        (b"tab\there", b"*alice: tab?here"),
        ("caf\u00e9 \u00ff".encode(), "*alice: caf\u00e9 \u00ff".encode()),
    ],
)
def test_injection_attempts_come_out_harmless(factory, text, shown):
    alice, aliceT = loggedIn(factory, "alice", 1)
    bob, bobT = loggedIn(factory, "bob", 2)
    alice.dataReceived(b"SAY " + text + b"\r\n")
    assert replies(bobT) == [shown]


def test_iac_bytes_never_reach_another_user(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    bob, bobT = loggedIn(factory, "bob", 2)
    alice.dataReceived(b"SAY a\xff\xff\xfdb\r\n")  # IAC IAC is a 0xFF data byte: invalid UTF-8
    assert replies(aliceT) == [b"!Invalid command."]
    assert bobT.value() == b""
    alice.dataReceived(b"SAY a\xff\xfd\x01b\r\n")  # a negotiation is removed
    assert replies(bobT) == [b"*alice: ab"]


def test_slow_session_queue_stays_bounded(factory):
    alice, aliceT = loggedIn(factory, "alice", 1)
    bob, bobT = loggedIn(factory, "bob", 2)
    bob.pauseProducing()  # bob's transport says its buffer is full
    for i in range(1000):
        alice.dataReceived(b"SAY message %d %s\r\n" % (i, b"x" * 500))
    assert bobT.value() == b""
    assert len(bob._events) <= 100 and bob._events.size <= 64 * 1024
    bob.resumeProducing()
    lines = replies(bobT)
    assert lines[0].startswith(b"*[server]: ") and b"events dropped" in lines[0]
    dropped = int(lines[0].split()[1])
    assert dropped + len(lines) - 1 == 1000
    assert lines[-1].startswith(b"*alice: message 999 ")


def test_event_queue_bounds():
    queue = EventQueue(maxEvents=3, maxBytes=10)
    for line in ["aaaa", "bbbb", "cccc"]:
        queue.push(line)
    assert len(queue) == 2 and queue.dropped == 1
    assert queue.drain() == ["*[server]: 1 events dropped, this session did not keep up.", "bbbb", "cccc"]
    assert queue.drain() == []


def test_sanitize_keeps_plain_text():
    assert sanitize("hello, w\u00f6rld! \U0001f600") == "hello, w\u00f6rld! \U0001f600"


def test_chat_text_not_logged(factory):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        alice, _ = loggedIn(factory, "alice", 1)
        loggedIn(factory, "bob", 2)
        alice.dataReceived(b"SAY the launch code is 1234\r\nMSG bob the launch code is 1234\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    # The observer sees the sessions (their logins; chat's joined/left lines repeated them and were dropped)...
    assert any(e.get("log_format", "").endswith("logged in as {user}") and e["user"] == "bob" for e in events)
    assert all("launch" not in repr(e) for e in events)  # ... but never what was said


def test_no_info_log_per_message(factory):
    """
    Clients decide how many messages there are, and twistd writes debug events
    too: no log event per SAY, MSG or NICK at any level, and none for joining
    or leaving either (the session's login and close lines, within the
    address's log budget, say that; echofile.eventlog).
    """
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        alice, _ = loggedIn(factory, "alice", 1)
        guest, _ = loggedIn(factory, "guest", 2)
        for _ in range(3):
            alice.dataReceived(b"SAY hi\r\nMSG ~guest1 hi\r\n")
        guest.dataReceived(b"NICK ada\r\nMSG alice hi\r\nSAY hi\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    chatEvents = [e for e in events if e.get("log_format", "").startswith("chat:")]
    assert [e for e in chatEvents if "sender" in e or "old" in e] == []
    assert chatEvents == []
