"""
``echofile-client chat``: an interactive line session on a logged-in
L{FileClient}.

Each line typed is said to everyone (``SAY``); ``/msg USER TEXT``, ``/who``,
``/help`` and ``/quit`` do the rest.  Events from others are written to
standard output as they arrive.  Standard input and output go through
L{StandardIO}, so the reactor never blocks on the terminal.
"""

from __future__ import annotations

from typing import Any, Callable, Generator

from twisted.internet import fdesc
from twisted.internet.defer import Deferred, inlineCallbacks, race
from twisted.internet.stdio import StandardIO
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile.client.console import Fatal
from echofile.client.errors import ClientError, ServerError
from echofile.client.protocol import FileClient
from echofile.client.session import Session
from echofile.text import sanitize

HELP = "Type a line to say it to everyone. /msg USER TEXT: to one user. /who: who is online. /quit: leave."


@implementer(IHalfCloseableProtocol)
class ChatInput(LineReceiver):
    """
    Standard input/output of a chat session.  L{finished} fires when the user
    is done (``/quit`` or end of input).

    @param err: writes one line to standard error (errors from the server).
    """

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024

    def __init__(self, client: FileClient, err: Callable[[str], None]) -> None:
        self._client = client
        self._err = err
        self.finished: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._outstanding: set[Deferred] = set()
        self._quitting = False
        client.onEvent = self.show

    def show(self, text: str) -> None:
        """A line for standard output: an event, or an answer to /who."""
        if self.transport is not None:
            self.transport.write(sanitize(text).encode("utf-8", "replace") + b"\n")

    def connectionMade(self) -> None:
        self._err(f"Chatting. {HELP}")

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text or self._quitting:
            return
        if not text.startswith("/"):
            self._watch(self._client.say(text))
            return
        command, _, rest = text[1:].partition(" ")
        rest = rest.strip()
        if command == "quit":
            self._quit()
        elif command == "who":
            self._watch(self._client.who().addCallback(self._showUsers))
        elif command == "msg" and " " in rest:
            user, _, message = rest.partition(" ")
            self._watch(self._client.msg(user, message.strip()))
        elif command == "help":
            self._err(HELP)
        else:
            self._err(f"Unknown or incomplete command: {text}. {HELP}")

    def _showUsers(self, users: list[str]) -> None:
        self.show(f"{len(users)} online: {', '.join(users)}")

    def _watch(self, d: Deferred) -> None:
        def failed(failure: Failure) -> None:
            if failure.check(ServerError):
                self._err(sanitize(failure.value.reply))
            elif failure.check(ClientError):
                pass  # the connection is gone; the session reports that once
            else:
                self._err(f"error: {failure.value}")

        self._outstanding.add(d)
        d.addErrback(failed)
        d.addBoth(lambda _: self._settled(d))

    def _settled(self, d: Deferred) -> None:
        self._outstanding.discard(d)
        if self._quitting and not self._outstanding:
            self._done()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._err(f"Line too long (over {self.MAX_LENGTH} bytes), not sent.")

    def readConnectionLost(self) -> None:
        self._quit()

    def writeConnectionLost(self) -> None:
        self._quit()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.transport = None
        self._quit()
        self.closed.callback(None)

    def _quit(self) -> None:
        """No more input; finish once every reply to what was typed has been shown."""
        self._quitting = True
        if not self._outstanding:
            self._done()

    def _done(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)


@inlineCallbacks
def runChat(session: Session) -> Generator[Deferred[Any], Any, int]:
    """Until /quit, end of input, or the server goes away (a L{Fatal} error)."""
    client, streams = session.client, session.streams
    assert client is not None
    chat = ChatInput(client, streams.err)
    inputFd = streams.stdin.fileno()
    stdio = StandardIO(chat, stdin=inputFd, stdout=streams.stdout.fileno(), reactor=session.reactor)
    # Standard output is the consumer of what the server sends: while it is
    # not taking output, stop reading from the server.
    stdio.registerProducer(client.transport, True)
    try:
        index, _ = yield race([chat.finished, client.whenDisconnected()])
    finally:
        stdio.unregisterProducer()
        stdio.loseConnection()
        yield chat.closed  # standard output flushed
        fdesc.setBlocking(inputFd)  # StandardIO made it non-blocking: give a terminal back as it was
    if index == 1:
        reason = f" (server said: {client.serverSaid})" if client.serverSaid else ""
        raise Fatal(f"the server closed the connection{reason}")
    return 0
