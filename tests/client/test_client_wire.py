"""echofile.wire's parsers, the reply readers on a fake Channel, and FileClient's bounds on a StringTransport."""

from __future__ import annotations

import pytest
from clienthelpers import Results, feed, sent
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echofile import wire
from echofile.client import ConnectionClosed, FileClient, MemorySink, ProtocolViolation
from echofile.client.replies import FileReader, LoginReader


def test_parsers():
    assert wire.parseSending("#Sending a b.txt (12 bytes).") == ("a b.txt", 12)
    assert wire.parseSending("#Sending x (12 bytes)") is None
    assert wire.parseEntries("#3 entries in docs.") == (3, "docs")
    assert wire.parseEntry("- pictures/") == ("pictures", None)
    assert wire.parseEntry("12 a file") == ("a file", 12)
    assert wire.parseUsers("#1 user online.") == 1 and wire.parseUsers("#2 users online.") == 2
    assert wire.parseNick("#You are now ~ada.") == "~ada"
    assert wire.isNotOpened("File x y could not be opened.") and not wire.isNotOpened("Bad password.")
    assert wire.parseSending("#Sending x (" + "9" * 20 + " bytes).").size == 10**20 - 1
    for line in ("#Sending x (" + "9" * 21 + " bytes).", "#Sending x (" + "9" * 5000 + " bytes)."):
        with pytest.raises(wire.MalformedReply):
            wire.parseSending(line)


class Channel:
    """What a reader may ask for, recorded."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def sendLine(self, line: str) -> None:
        self.calls.append(("send", line))

    def releaseHeld(self) -> None:
        self.calls.append("release")

    def readRaw(self) -> None:
        self.calls.append("raw")


def test_readers_need_only_the_narrow_channel():
    channel = Channel()
    login = LoginReader("pw")
    login.lineReceived(channel, "#User alice accepted, send AUTH.")
    login.lineReceived(channel, "#You are logged in.")
    assert channel.calls == [("send", "AUTH pw"), "release"] and login.result == "You are logged in."
    sink = MemorySink()
    body = FileReader(sink)
    body.lineReceived(channel, "#Sending x (2 bytes).")
    assert channel.calls[-1] == "raw"
    assert body.rawDataReceived(channel, b"ab\r\n#File") == b"#File"
    body.lineReceived(channel, "#File x sent successfully.")
    assert body.result == 2 and sink.value == b"ab"


@pytest.fixture
def ready():
    protocol = FileClient(Clock(), 10, maxEntries=5)
    transport = StringTransport()
    protocol.makeConnection(transport)
    feed(protocol, b"#Server Ready.\r\n")
    return protocol, transport


def test_who_and_list_counts_are_bounded(ready):
    protocol, transport = ready
    who = Results(protocol.who())
    after = Results(protocol.list())
    feed(protocol, b"#6 users online.\r\n")
    assert str(who.error(ProtocolViolation)) == "server announced 6 users, more than the limit of 5"
    after.error(ProtocolViolation)
    assert transport.disconnecting


def test_a_listing_streams_to_onEntry(ready):
    protocol, transport = ready
    seen = []
    listing = Results(protocol.list("d", onEntry=seen.append))
    feed(protocol, b"#2 entries in d.\r\n1 a\r\n- b/\r\n")
    assert listing.value == [] and [e.name for e in seen] == ["a", "b"]


def test_a_failed_sink_with_a_huge_rest_drops_the_connection(ready):
    """Refused before a byte (no space): the body is not read for nothing; the next request fails too."""
    protocol, transport = ready

    class Refusing(MemorySink):
        def begin(self, size: int) -> None:
            raise OSError(28, "No space left on device")

    got = Results(protocol.get("huge", Refusing()))
    after = Results(protocol.list())
    feed(protocol, b"#Sending huge (1000000000000 bytes).\r\n" + b"x" * 1000)
    assert got.error(OSError).errno == 28
    after.error(ConnectionClosed)
    assert transport.disconnecting and protocol.disconnected
    assert sent(transport).endswith(b"LIST\r\n")
    late = Results(protocol.list())
    late.error(ConnectionClosed)


def test_a_collected_reply_is_bounded_in_bytes_too(ready, monkeypatch):
    """Under the count limit, long lines could still add up: collected text is capped as well."""
    from echofile.client import replies

    monkeypatch.setattr(replies, "COLLECT_LIMIT", 1000)
    protocol, transport = ready
    who = Results(protocol.who())
    feed(protocol, b"#5 users online.\r\n" + (b"x" * 400 + b"\r\n") * 3)
    assert str(who.error(ProtocolViolation)) == "server sent more than 1000 bytes of users"
    assert transport.disconnecting
