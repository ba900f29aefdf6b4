"""
The client against hostile fake servers on loopback (issue #14, items 1-3):
escape sequences never reach the terminal, counts, sizes and lines are
bounded, and the disk is never filled silently.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from clienthelpers import NO_HASH_NOTICE, Listening, names, runClient
from twisted.internet.protocol import Factory, Protocol

from echofile.client import sinks

NOTICE = NO_HASH_NOTICE + "\n"  # these fakes are revision-1 servers: HASH is an invalid command there

#: Everything a terminal would act on: ESC (CSI, OSC), the 8-bit CSI, BEL.
NASTY = "\x1b[2J\x1b]0;pwned\x07\x9b31m\x07"


def clean(text: str) -> bool:
    return not any(c in text for c in "\x1b\x07\x9b\x9d")


class Refusing(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(f"!Server busy{NASTY}.\r\n".encode())
        self.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_refusal_is_neutralised():
    server = yield Listening(Factory.forProtocol(Refusing)).start()
    try:
        result = yield runClient("--connect", server.endpoint, "list")
    finally:
        yield server.stop()
    assert result.status == 2
    assert "refused the session: Server busy" in result.err
    assert clean(result.err), repr(result.err)


@pytest_twisted.inlineCallbacks
def test_listing_login_error_and_events_are_neutralised(fakeServer):
    def script(line: bytes, transport) -> None:
        if line == b"LIST":
            transport.write(f"*{NASTY}mallory: hi{NASTY}\r\n#2 entries in /.\r\n1 evil{NASTY}.txt\r\n- dir{NASTY}/\r\n".encode())
        elif line == b"LIST bad":
            transport.write(f"!Directory bad{NASTY} could not be opened.\r\n".encode())
        elif line == b"QUIT":
            transport.write(b"#Bye.\r\n")
            transport.loseConnection()

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "list")
    assert result.status == 0
    assert result.out.splitlines() == ["1 evil?[2J?]0;pwned??31m?.txt", "- dir?[2J?]0;pwned??31m?/"]
    assert result.err.startswith("*?[2J")
    assert clean(result.out + result.err)
    result = yield runClient("--connect", server.endpoint, "list", "bad")
    assert result.status == 1 and clean(result.err) and "could not be opened" in result.err


@pytest_twisted.inlineCallbacks
def test_login_error_is_neutralised(fakeServer):
    class BadLogin(Protocol):
        def connectionMade(self) -> None:
            self.transport.write(b"#Server Ready.\r\n")

        def dataReceived(self, data: bytes) -> None:
            self.transport.write(f"!Bad password{NASTY}.\r\n".encode())

    server = yield Listening(Factory.forProtocol(BadLogin)).start()
    try:
        result = yield runClient("--connect", server.endpoint, "list")
    finally:
        yield server.stop()
    assert result.status == 2 and "login failed: Bad password" in result.err and clean(result.err)


@pytest_twisted.inlineCallbacks
def test_file_error_and_protocol_violation_are_neutralised(fakeServer, tmp_path):
    def script(line: bytes, transport) -> None:
        if line == b"FILE a":
            transport.write(f"!Something{NASTY} else.\r\n".encode())
        elif line == b"FILE b":
            transport.write(f"#Sending b{NASTY} (x bytes).\r\n".encode())

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "a", "b", "-o", str(tmp_path))
    assert result.status == 2
    assert "a: server said: Something" in result.err
    assert "b: not saved: unexpected reply" in result.err
    assert clean(result.err), repr(result.err)


def flood(header: bytes, line: bytes):
    """A script that answers LIST with C{header} and then lines without end."""

    class Flooding(Protocol):
        def connectionMade(self) -> None:
            self.transport.write(b"#Server Ready.\r\n")

        def dataReceived(self, data: bytes) -> None:
            if b"AUTH" in data:
                self.transport.write(b"#You are logged in.\r\n")
            if b"LIST" in data:
                self.transport.write(header)
                self.transport.registerProducer(self, True)
                self.resumeProducing()

        def resumeProducing(self) -> None:
            self._paused = False
            while not self._paused and self.transport.connected:
                self.transport.write(line * 1000)

        def pauseProducing(self) -> None:
            self._paused = True

        def stopProducing(self) -> None:
            self._paused = True

    return Factory.forProtocol(Flooding)


@pytest_twisted.inlineCallbacks
def test_absurd_entry_count_is_refused_at_the_header():
    server = yield Listening(flood(b"#1000000000000 entries in /.\r\n", b"1 a.txt\r\n")).start()
    try:
        result = yield runClient("--connect", server.endpoint, "list")
    finally:
        yield server.stop()
    assert result.status == 2
    assert result.err == (
        "echofile-client: list failed: server announced 1000000000000 entries, more than the limit of 1000000\n"
    )
    assert result.out == ""


@pytest_twisted.inlineCallbacks
def test_over_long_reply_line_is_a_clean_error():
    server = yield Listening(flood(b"#5 entries in /.\r\n1 ", b"a" * 1000)).start()
    try:
        result = yield runClient("--connect", server.endpoint, "list")
    finally:
        yield server.stop()
    assert result.status == 2
    assert result.err == "echofile-client: list failed: reply line longer than 16384 bytes\n"


@pytest_twisted.inlineCallbacks
def test_size_of_5000_digits_is_a_protocol_violation(fakeServer, tmp_path):
    def script(line: bytes, transport) -> None:
        if line == b"FILE big":
            transport.write(b"#Sending big (" + b"9" * 5000 + b" bytes).\r\n")

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "big", "-o", str(tmp_path))
    assert result.status == 2
    assert result.err == NOTICE + "big: not saved: server announced a file size of 5000 digits\n"
    assert "Traceback" not in result.err and "Unhandled" not in result.err
    assert names(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_more_than_the_free_space_is_refused_before_writing(fakeServer, tmp_path, monkeypatch):
    """The server announces 1 PB and sends bytes without end: refused at once, connection dropped, disk untouched."""
    monkeypatch.setattr(sinks, "freeBytes", lambda folder: 1000)

    def script(line: bytes, transport) -> None:
        if line == b"FILE small":
            transport.write(b"#Sending small (2 bytes).\r\nok\r\n#File small sent successfully.\r\n")
        elif line == b"FILE huge":
            transport.write(b"#Sending huge (1000000000000000 bytes).\r\n" + b"x" * 65536)

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "small", "huge", "after", "-o", str(tmp_path))
    assert result.status == 1
    assert result.out == "small has been saved.\n"
    assert result.err == NOTICE + (
        f"huge: not saved: not enough space in {tmp_path}: the file has 1000000000000000 bytes, 1000 are free\n"
    )
    assert names(tmp_path) == ["small"]


@pytest_twisted.inlineCallbacks
def test_a_failed_write_stops_with_a_clear_error(fakeServer, tmp_path, monkeypatch):
    def full(self, data: bytes) -> None:
        raise OSError(28, "No space left on device", str(self._target))

    monkeypatch.setattr(sinks.TempFileSink, "write", full)

    def script(line: bytes, transport) -> None:
        if line.startswith(b"FILE "):
            name = line[5:]
            transport.write(b"#Sending %s (3 bytes).\r\nabc\r\n#File %s sent successfully.\r\n" % (name, name))
        elif line == b"QUIT":
            transport.write(b"#Bye.\r\n")
            transport.loseConnection()

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "one", "two", "-o", str(tmp_path))
    assert result.status == 1
    assert result.err == NOTICE + f"one: not saved: No space left on device ({tmp_path / 'one'})\n"  # and two not tried
    assert names(tmp_path) == []


def test_dev_full_write_names_the_file(tmp_path):
    from echofile.client.progress import Transfer

    sink = sinks.TempFileSink(tmp_path / "f.bin", Transfer())
    sink.begin(10)
    import os

    os.close(sink._fd)
    sink._fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(OSError) as caught:
        sink.write(b"abc")
    assert caught.value.errno == 28 and caught.value.filename == str(tmp_path / "f.bin")
    sink.discard()
