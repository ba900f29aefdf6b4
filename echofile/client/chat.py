"""
``echofile-client chat``: a line session on a logged-in L{FileClient}.

L{ChatCore} is what a typed line means (a ``SAY``, or ``/msg``, ``/nick``,
``/who``, ``/help``, ``/quit``) and what comes back; it prints through a
L{ChatView}.  Two views: on a terminal, L{echofile.client.chatterm} gives
line editing and history with incoming lines above the input line; on any
other standard input, L{ChatInput} is a plain line-at-a-time filter (events
and answers on standard output, notes on standard error).  Either way the
terminal's output is the consumer of the server's input: while it is not
taking output, the client stops reading from the server.
"""

from __future__ import annotations

import os
import sys
import termios
import tty
import typing
from typing import Any, Callable, Generator

from twisted.internet import fdesc
from twisted.internet.defer import Deferred, inlineCallbacks, race
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile import wire
from echofile.client.console import Fatal
from echofile.client.errors import ClientError, ServerError
from echofile.client.protocol import FileClient
from echofile.client.session import Session
from echofile.text import sanitize

HELP = (
    "Type a line to say it to everyone. /msg USER TEXT: to one user. /nick NAME: your guest name. "
    "/who: who is online. /quit: leave."
)

#: The longest line read from standard input (a longer one is refused whole, never cut).
MAX_INPUT = 64 * 1024


class ChatView(typing.Protocol):
    def show(self, text: str) -> None:
        """Output proper: an event, an answer to /who."""

    def own(self, text: str) -> None:
        """What the user just said, as others see it."""

    def note(self, text: str) -> None:
        """The client's notes and the server's errors."""


def tooLong(size: int) -> str:
    return f"Line too long ({size} bytes; the server takes {wire.MAX_COMMAND_LINE}), not sent."


class ChatCore:
    """
    The chat's meaning, without a terminal.  L{finished} fires when the user
    is done (``/quit`` or end of input) and every reply to what they typed
    has arrived.  C{name} is the user's chat name as far as we know it.
    """

    def __init__(self, client: FileClient, view: ChatView, name: str) -> None:
        self._client = client
        self._view = view
        self.name = name
        self.finished: Deferred[None] = Deferred()
        self._outstanding: set[Deferred] = set()
        self._quitting = False
        client.onEvent = view.show

    def typed(self, text: str) -> None:
        text = text.strip()
        if not text or self._quitting:
            return
        if not text.startswith("/"):
            self._send("SAY " + text, lambda: self._client.say(text), lambda _: self._view.own(f"{self.name}: {text}"))
            return
        command, _, rest = text[1:].partition(" ")
        rest = rest.strip()
        if command == "quit":
            self.quit()
        elif command == "who":
            self._watch(self._client.who().addCallback(self._showUsers))
        elif command == "msg" and " " in rest:
            user, _, message = rest.partition(" ")
            message = message.strip()
            self._send(f"MSG {user} {message}", lambda: self._client.msg(user, message),
                       lambda _: self._view.own(f"{self.name} (to {user}): {message}"))
        elif command == "nick" and rest and " " not in rest:
            self._send("NICK " + rest, lambda: self._client.nick(rest), self._renamed)
        elif command == "help":
            self._view.note(HELP)
        else:
            self._view.note(f"Unknown or incomplete command: {text}. {HELP}")

    def tooLong(self, size: int) -> None:
        self._view.note(tooLong(size))

    def _send(self, line: str, request: Callable[[], Deferred], done: Callable[[object], None]) -> None:
        """Send a command only if the server will take it whole."""
        size = len(line.encode("utf-8"))
        if size > wire.MAX_COMMAND_LINE:
            self.tooLong(size)
            return
        self._watch(request().addCallback(done))

    def _renamed(self, name: str) -> None:
        self.name = name
        self._view.note(f"You are now {name}.")

    def _showUsers(self, users: list[str]) -> None:
        self._view.show(f"{len(users)} online: {', '.join(users)}")

    def _watch(self, d: Deferred) -> None:
        def failed(failure: Failure) -> None:
            if failure.check(ServerError):
                self._view.note(failure.value.reply)
            elif failure.check(ClientError):
                pass  # the connection is gone; the session reports that once
            else:
                self._view.note(f"error: {failure.value}")

        self._outstanding.add(d)
        d.addErrback(failed)
        d.addBoth(lambda _: self._settled(d))

    def _settled(self, d: Deferred) -> None:
        self._outstanding.discard(d)
        if self._quitting and not self._outstanding:
            self._done()

    def quit(self) -> None:
        """No more input; finish once every reply to what was typed has been shown."""
        self._quitting = True
        if not self._outstanding:
            self._done()

    def _done(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)


class LineSplitter:
    """
    Lines of at most C{maxLength} bytes from a byte stream.  A longer line is
    refused whole (C{onTooLong} once, with the size seen) and its rest
    skipped up to its line break: a tail is never taken for a line.
    """

    def __init__(self, maxLength: int, onLine: Callable[[bytes], None], onTooLong: Callable[[int], None]) -> None:
        self._max = maxLength
        self._onLine = onLine
        self._onTooLong = onTooLong
        self._buffer = b""
        self._skipped: int | None = None  # bytes of a too-long line seen so far

    def feed(self, data: bytes) -> None:
        while data:
            end = data.find(b"\n")
            if self._skipped is not None:
                if end < 0:
                    self._skipped += len(data)
                    return
                self._onTooLong(self._skipped + end)
                self._skipped = None
                data = data[end + 1 :]
                continue
            if end < 0:
                self._buffer += data
                if len(self._buffer) > self._max:
                    self._skipped, self._buffer = len(self._buffer), b""
                return
            line, self._buffer, data = self._buffer + data[:end], b"", data[end + 1 :]
            if len(line) > self._max:
                self._onTooLong(len(line))
            else:
                self._onLine(line.removesuffix(b"\r"))


@implementer(IHalfCloseableProtocol)
class ChatInput(Protocol):
    """
    Standard input/output of a chat session when standard input is not a
    terminal: one line at a time, events and answers on standard output.

    @param err: writes one line to standard error (notes, errors from the server).
    """

    def __init__(self, client: FileClient, err: Callable[[str], None], name: str = "guest") -> None:
        self._err = err
        self._core = ChatCore(client, self, name)
        self._lines = LineSplitter(MAX_INPUT, self._line, self._core.tooLong)
        self.finished = self._core.finished
        self.closed: Deferred[None] = Deferred()

    def show(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(sanitize(text).encode("utf-8", "replace") + b"\n")

    def own(self, text: str) -> None:
        """A filter does not repeat its input."""

    def note(self, text: str) -> None:
        self._err(sanitize(text))

    def connectionMade(self) -> None:
        self._err(f"Chatting. {HELP}")

    def dataReceived(self, data: bytes) -> None:
        self._lines.feed(data)

    def _line(self, line: bytes) -> None:
        self._core.typed(line.decode("utf-8", "replace"))

    def readConnectionLost(self) -> None:
        self._core.quit()

    def writeConnectionLost(self) -> None:
        self._core.quit()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.transport = None
        self._core.quit()
        self.closed.callback(None)


@inlineCallbacks
def runChat(session: Session) -> Generator[Deferred[Any], Any, int]:
    """Until /quit, end of input, or the server goes away (a L{Fatal} error)."""
    client, streams = session.client, session.streams
    assert client is not None
    name = session.options.user or "guest"
    inputFd, outputFd = streams.stdin.fileno(), streams.stdout.fileno()
    terminal = os.isatty(inputFd) and os.isatty(outputFd)
    saved = termios.tcgetattr(inputFd) if terminal else None
    if terminal:
        from echofile.client.chatterm import terminalChat

        tty.setcbreak(inputFd)  # keystrokes one by one, no echo; Ctrl-C still interrupts
        protocol, chat = terminalChat(client, name, session.reactor)
        streams.err(f"Chatting. {HELP}")
    else:
        protocol = chat = ChatInput(client, streams.err, name)
    stdio = StandardIO(protocol, stdin=inputFd, stdout=outputFd, reactor=session.reactor)
    # Standard output is the consumer of what the server sends: while it is
    # not taking output, stop reading from the server.
    stdio.registerProducer(client.transport, True)
    try:
        index, _ = yield race([chat.finished, client.whenDisconnected()])
    finally:
        if terminal:
            chat.leave()  # type: ignore[union-attr]
        stdio.unregisterProducer()
        stdio.loseConnection()
        yield chat.closed  # standard output flushed
        fdesc.setBlocking(inputFd)  # StandardIO made it non-blocking: give a terminal back as it was
        if saved is not None:
            termios.tcsetattr(inputFd, termios.TCSADRAIN, saved)
            sys.stdout.flush()
    if index == 1:
        reason = f" (server said: {client.serverSaid})" if client.serverSaid else ""
        raise Fatal(f"the server closed the connection{reason}")
    return 0
