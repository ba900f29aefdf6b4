"""
The chat command: ChatInput on StringTransports, then the real program
(spawned with reactor.spawnProcess) chatting with a library session on the
real server over loopback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import pytest_twisted
from clienthelpers import ALICE_PASSWORD
from support import PASSWORD
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echofile.client.chat import ChatInput
from echofile.client.protocol import FileClient


def chatOnStringTransports():
    client = FileClient(Clock(), 10)
    network = StringTransport()
    client.makeConnection(network)
    client.dataReceived(b"#Server Ready.\r\n")
    errors: list[str] = []
    chat = ChatInput(client, errors.append)
    terminal = StringTransport()
    chat.makeConnection(terminal)
    errors.clear()  # the greeting
    return client, network, chat, terminal, errors


def test_lines_and_commands_become_requests():
    client, network, chat, terminal, errors = chatOnStringTransports()
    chat.dataReceived(b"hello there\n  \n/msg bob  how are you \n/who\n/frobnicate\n/msg bob\n")
    assert network.value() == b"SAY hello there\r\nMSG bob how are you\r\nWHO\r\n"
    assert len(errors) == 2 and errors[0].startswith("Unknown or incomplete command: /frobnicate.")
    client.dataReceived(b"#Said.\r\n!No such user online: bob.\r\n*bob: hi\r\n#2 users online.\r\nalice\r\nguest\r\n")
    assert errors[2:] == ["No such user online: bob."]
    assert terminal.value() == b"bob: hi\n2 online: alice, guest\n"


def test_quit_waits_for_outstanding_replies():
    client, network, chat, terminal, errors = chatOnStringTransports()
    chat.dataReceived(b"/who\n/quit\nnot sent\n")
    assert network.value() == b"WHO\r\n"
    assert not chat.finished.called
    client.dataReceived(b"#1 users online.\r\nguest\r\n")
    assert chat.finished.called
    assert terminal.value() == b"1 online: guest\n"


class Spawned(ProcessProtocol):
    """The chat program; fires Deferreds when its output says what a test waits for."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self._waits: list[tuple[Callable[[], bool], Deferred[None]]] = []
        self.ended: Deferred[int] = Deferred()

    def until(self, condition: Callable[[], bool]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waits.append((condition, d))
        self._check()
        return d

    def _check(self) -> None:
        for wait in list(self._waits):
            if wait[0]():
                self._waits.remove(wait)
                wait[1].callback(None)

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


@pytest_twisted.inlineCallbacks
def test_chat_with_another_session(fileServer):
    events: list[str] = []
    heard: list[Deferred[None]] = []

    def onEvent(text: str) -> None:
        events.append(text)
        if heard:
            heard.pop(0).callback(None)

    def nextEvent() -> Deferred[None]:
        d: Deferred[None] = Deferred()
        heard.append(d)
        return d

    alice = FileClient(reactor, 10, onEvent=onEvent)
    yield connectProtocol(clientFromString(reactor, fileServer.endpoint), alice)
    yield alice.login(ALICE_PASSWORD, user="alice")

    program = Spawned()
    env = {**os.environ, "ECHOFILE_PASSWORD": PASSWORD}
    process = reactor.spawnProcess(
        program, sys.executable, [sys.executable, "-m", "echofile.client", "--connect", fileServer.endpoint, "chat"],
        env=env,
    )
    try:
        yield program.until(lambda: b"Chatting." in program.err)
        # Logged in before the banner: this SAY reaches the program.
        said = nextEvent()
        process.write(b"hello everyone\n")
        yield said
        assert events == ["~guest1: hello everyone"]

        yield alice.say("hi guest")
        yield program.until(lambda: b"alice: hi guest\n" in program.out)

        private = nextEvent()
        process.write(b"/msg alice psst\n/who\n")
        yield private
        assert events[-1] == "~guest1 (private): psst"
        yield program.until(lambda: b"2 online: alice, ~guest1\n" in program.out)

        process.closeStdin()  # end of input: leave
        status = yield program.ended
    finally:
        if not program.ended.called:
            process.signalProcess("KILL")
            yield program.ended
        yield alice.quit()
        yield alice.whenDisconnected()
    assert status == 0
    assert program.out == b"alice: hi guest\n2 online: alice, ~guest1\n"


def test_an_over_long_line_is_refused_whole_and_its_tail_never_sent():
    client, network, chat, terminal, errors = chatOnStringTransports()
    chat.dataReceived(b"x" * 50_000)
    chat.dataReceived(b"y" * 50_000 + b"\nafter\n")  # 100,000 bytes typed as one line, then a short one
    chat.dataReceived(b"z" * 5000 + b"\n")  # under the input bound, over the server's line limit
    assert network.value() == b"SAY after\r\n"
    assert errors == [
        "Line too long (100000 bytes; the server takes 4096), not sent.",
        "Line too long (5004 bytes; the server takes 4096), not sent.",
    ]


def test_nick_and_help():
    client, network, chat, terminal, errors = chatOnStringTransports()
    chat.dataReceived(b"/nick ada\n/help\n")
    assert network.value() == b"NICK ada\r\n"
    client.dataReceived(b"#You are now ~ada.\r\n")
    assert errors[0].startswith("Type a line to say it to everyone.") and "/nick NAME" in errors[0]
    assert errors[1:] == ["You are now ~ada."]
    network.clear()
    chat.dataReceived(b"/nick ada\n")
    client.dataReceived(b"!Nickname ~ada is in use.\r\n")
    assert errors[-1] == "Nickname ~ada is in use."


def test_events_and_errors_are_neutralised():
    client, network, chat, terminal, errors = chatOnStringTransports()
    chat.dataReceived(b"hi\n")
    client.dataReceived("!No\x1b]0;x\x07pe.\r\n*eve\x1b[2J: boo\x9b\r\n".encode())
    assert errors == ["No?]0;x?pe."]
    assert terminal.value() == "eve?[2J: boo?\n".encode()
    chat.dataReceived(b"/who\n")
    client.dataReceived(b"#2 users online.\r\nalice\r\nev\x1b]2;t\x07e\r\n")
    assert terminal.value().endswith(b"2 online: alice, ev?]2;t?e\n")


def terminalChat():
    """The terminal view on an insults ServerProtocol over a StringTransport, as StandardIO would run it."""
    from echofile.client.chatterm import terminalChat as make

    client = FileClient(Clock(), 10)
    network = StringTransport()
    client.makeConnection(network)
    client.dataReceived(b"#Server Ready.\r\n")
    protocol, view = make(client, "alice", Clock())
    screen = StringTransport()
    protocol.makeConnection(screen)
    return client, network, protocol, view, screen


def test_terminal_view_edits_and_shows_own_lines_and_events_above_the_input():
    client, network, protocol, view, screen = terminalChat()
    protocol.dataReceived(b"helo\x1b[Dl\r")
    assert network.value() == b"SAY hello\r\n"
    client.dataReceived(b"#Said.\r\n")
    assert b"] alice: hello\r\n" in screen.value()
    network.clear()
    protocol.dataReceived(b"\x1b[A\r")  # Up: the history
    assert network.value() == b"SAY hello\r\n"
    network.clear()
    protocol.dataReceived(b"ab")
    screen.clear()
    client.dataReceived(b"*bob: hi\x1b[2J\r\n")
    shown = screen.value()
    assert b"] bob: hi?[2J\r\n" in shown and shown.endswith(b"> ab")  # input line drawn again, as it was
    protocol.dataReceived(b"c\r")
    assert network.value() == b"SAY abc\r\n"
    protocol.dataReceived(b"\x04")  # Ctrl-D on an empty line: leave, once the replies are in
    assert not view.finished.called
    client.dataReceived(b"#Said.\r\n#Said.\r\n")
    assert view.finished.called
    screen.clear()
    view.leave()
    assert screen.value() == b"\r\x1b[2K\x1b[4l"  # prompt erased, insert mode (IRM) off for the shell
