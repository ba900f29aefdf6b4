"""FileClient against a StringTransport: the wire format, the FIFO, body reading, timeouts on a task.Clock."""

from __future__ import annotations

import pytest
from clienthelpers import TIMEOUT, Results, feed, sent
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from echofile.client import (
    ConnectionClosed,
    Entry,
    MemorySink,
    ProtocolViolation,
    ReplyTimeout,
    ServerError,
    TransferIncomplete,
)



def test_greeting_fires_whenReady(client):
    protocol, transport = client
    waiting = Results(protocol.whenReady())
    assert not waiting.fired
    feed(protocol, b"#Server Ready.\r\n")
    assert waiting.fired and waiting.failure is None
    assert Results(protocol.whenReady()).fired  # late callers are answered at once


def test_busy_server(client):
    protocol, transport = client
    ready = Results(protocol.whenReady())
    login = Results(protocol.login("pw"))
    feed(protocol, b"!Server busy, try again later.\r\n")
    assert ready.error(ServerError).reply == "Server busy, try again later."
    protocol.connectionLost(Failure(ConnectionDone()))
    assert "Server busy" in str(login.error(ConnectionClosed))


def test_not_an_echofile_server(client):
    protocol, transport = client
    ready = Results(protocol.whenReady())
    feed(protocol, b"SSH-2.0-OpenSSH_9.6\r\n")
    ready.error(ProtocolViolation)
    assert transport.disconnecting


def test_login_default_account(ready):
    protocol, transport = ready
    login = Results(protocol.login("correct horse"))
    assert sent(transport) == b"AUTH correct horse\r\n"
    feed(protocol, b"#You are logged in.\r\n")
    assert login.value == "You are logged in."


def test_login_bad_password(ready):
    protocol, transport = ready
    login = Results(protocol.login("wrong"))
    feed(protocol, b"!Bad password.\r\n")
    assert login.error(ServerError).reply == "Bad password."


def test_named_login_holds_auth_and_later_commands_until_user_accepted(ready):
    protocol, transport = ready
    login = Results(protocol.login("s3cret", user="alice"))
    listing = Results(protocol.list())
    assert sent(transport) == b"USER alice\r\n"
    feed(protocol, b"#User alice accepted, send AUTH.\r\n")
    assert sent(transport) == b"AUTH s3cret\r\n"
    feed(protocol, b"#You are logged in.\r\n")
    assert login.value == "You are logged in."
    assert sent(transport) == b"LIST\r\n"
    feed(protocol, b"#0 entries in /.\r\n")
    assert listing.value == []


def test_refused_user_never_sends_the_password(ready):
    protocol, transport = ready
    login = Results(protocol.login("s3cret", user="bad name"))
    listing = Results(protocol.list())
    assert sent(transport) == b"USER bad name\r\n"
    feed(protocol, b"!Invalid user name.\r\n")
    assert login.error(ServerError).reply == "Invalid user name."
    assert sent(transport) == b"LIST\r\n"  # the held command goes out, the AUTH never does
    feed(protocol, b"!You are not logged in.\r\n")
    assert listing.error(ServerError).reply == "You are not logged in."


def test_line_breaks_in_arguments_are_refused(ready):
    protocol, transport = ready
    with pytest.raises(ValueError):
        protocol.get("a\r\nQUIT", MemorySink())
    with pytest.raises(ValueError):
        protocol.login("pw\nFILE x")
    assert sent(transport) == b""


TRICKY = (
    b"first line\r\n"
    b"\r\n#File body.txt sent successfully.\r\n"
    b"#Sending other (3 bytes).\r\n"
    b"!Bad password.\r\n"
    b"*alice: not an event\r\n"
    b"\xff\x00 binary tail"
)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_body_is_read_by_size_not_by_trailer(ready, chunk):
    protocol, transport = ready
    sink = MemorySink()
    got = Results(protocol.get("body.txt", sink))
    listing = Results(protocol.list("docs"))
    assert sent(transport) == b"FILE body.txt\r\nLIST docs\r\n"  # pipelined
    wire = (
        b"#Sending body.txt (%d bytes).\r\n" % len(TRICKY)
        + TRICKY
        + b"\r\n#File body.txt sent successfully.\r\n"
        + b"#2 entries in docs.\r\n12 readme.txt\r\n- pictures/\r\n"
    )
    feed(protocol, wire, chunk)
    assert got.value == len(TRICKY)
    assert sink.size == len(TRICKY)
    assert sink.value == TRICKY
    assert listing.value == [Entry("readme.txt", 12), Entry("pictures", None)]


def test_empty_file(ready):
    protocol, transport = ready
    sink = MemorySink()
    got = Results(protocol.get("empty.bin", sink))
    feed(protocol, b"#Sending empty.bin (0 bytes).\r\n\r\n#File empty.bin sent successfully.\r\n")
    assert got.value == 0 and sink.size == 0 and sink.value == b""


def test_file_not_found(ready):
    protocol, transport = ready
    sink = MemorySink()
    got = Results(protocol.get("nope", sink))
    feed(protocol, b"!File nope could not be opened.\r\n")
    assert got.error(ServerError).reply == "File nope could not be opened."
    assert sink.size is None


def test_body_not_followed_by_crlf_is_a_violation(ready):
    protocol, transport = ready
    got = Results(protocol.get("x", MemorySink()))
    feed(protocol, b"#Sending x (3 bytes).\r\nabcde\r\n")
    got.error(ProtocolViolation)
    assert transport.disconnecting


def test_failing_sink_fails_its_request_and_keeps_the_session(ready):
    protocol, transport = ready

    class Full(MemorySink):
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

    got = Results(protocol.get("x", Full()))
    after = Results(protocol.list())
    feed(protocol, b"#Sending x (3 bytes).\r\nabc\r\n#File x sent successfully.\r\n#0 entries in /.\r\n")
    assert got.error(OSError).errno == 28
    assert after.value == []


def test_events_between_replies_are_not_replies(ready, events):
    protocol, transport = ready
    login = Results(protocol.login("pw"))
    sink = MemorySink()
    got = Results(protocol.get("x", sink))
    feed(
        protocol,
        b"*bob: hello\r\n#You are logged in.\r\n*alice (private): hi\r\n"
        b"#Sending x (2 bytes).\r\nab\r\n#File x sent successfully.\r\n*carol: bye\r\n",
    )
    assert login.value == "You are logged in."
    assert got.value == 2 and sink.value == b"ab"
    assert events == ["bob: hello", "alice (private): hi", "carol: bye"]


def test_listing_lines(ready):
    protocol, transport = ready
    listing = Results(protocol.list())
    feed(protocol, b"#3 entries in /.\r\n1234 a file with spaces.txt\r\n0 empty.bin\r\n- sub dir/\r\n")
    assert listing.value == [Entry("a file with spaces.txt", 1234), Entry("empty.bin", 0), Entry("sub dir", None)]
    assert listing.value[2].isDirectory


def test_listing_error(ready):
    protocol, transport = ready
    listing = Results(protocol.list("nope"))
    assert sent(transport) == b"LIST nope\r\n"
    feed(protocol, b"!Directory nope could not be opened.\r\n")
    assert listing.error(ServerError).reply == "Directory nope could not be opened."


def test_connection_lost_mid_body(ready):
    protocol, transport = ready
    sink = MemorySink()
    got = Results(protocol.get("big", sink))
    after = Results(protocol.list())
    closed = Results(protocol.whenDisconnected())
    feed(protocol, b"#Sending big (1000 bytes).\r\n" + b"x" * 10)
    protocol.connectionLost(Failure(ConnectionDone()))
    error = got.error(TransferIncomplete)
    assert (error.received, error.size) == (10, 1000)
    after.error(ConnectionClosed)
    assert closed.fired


def test_server_goodbye_explains_a_closed_connection(ready):
    protocol, transport = ready
    feed(protocol, b"!Idle timeout.\r\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    late = Results(protocol.list())
    error = late.error(ConnectionClosed)
    assert error.serverSaid == "Idle timeout."


def test_quit(ready):
    protocol, transport = ready
    bye = Results(protocol.quit())
    assert sent(transport) == b"QUIT\r\n"
    feed(protocol, b"#Bye.\r\n")
    assert bye.value == "Bye."


def test_no_timer_while_nothing_is_pending(ready, clock):
    assert clock.getDelayedCalls() == []


def test_timeout_fails_every_pending_request(ready, clock):
    protocol, transport = ready
    first = Results(protocol.list())
    second = Results(protocol.get("x", MemorySink()))
    clock.advance(TIMEOUT - 0.1)
    assert not first.fired
    clock.advance(0.1)
    first.error(ReplyTimeout)
    second.error(ReplyTimeout)
    assert transport.disconnecting


def test_progress_postpones_the_timeout(ready, clock):
    protocol, transport = ready
    sink = MemorySink()
    got = Results(protocol.get("slow", sink))
    feed(protocol, b"#Sending slow (30 bytes).\r\n")
    for _ in range(30):
        clock.advance(TIMEOUT * 0.9)
        feed(protocol, b"z")
    feed(protocol, b"\r\n#File slow sent successfully.\r\n")
    assert got.value == 30
    assert clock.getDelayedCalls() == []


def test_timeout_while_waiting_for_the_greeting(client, clock):
    protocol, transport = client
    ready = Results(protocol.whenReady())
    clock.advance(TIMEOUT)
    ready.error(ReplyTimeout)


def test_a_callback_may_queue_the_next_request(ready):
    """The head request leaves the queue before its Deferred fires, so chaining keeps the FIFO right."""
    protocol, transport = ready
    second: list[Results] = []
    first = Results(protocol.list())
    first_d = protocol.list("a")
    first_d.addCallback(lambda _: second.append(Results(protocol.list("b"))))
    feed(protocol, b"#0 entries in /.\r\n#0 entries in a.\r\n")
    assert first.value == []
    assert sent(transport) == b"LIST\r\nLIST a\r\nLIST b\r\n"
    feed(protocol, b"#1 entries in b.\r\n1 one\r\n")
    assert second[0].value == [Entry("one", 1)]
