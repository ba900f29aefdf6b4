"""
The base of every reply reader (L{Reader}) and the narrow L{Channel} it is
handed: one reader per pending command, fed the reply's lines (and a file
body's bytes) by L{echofile.client.protocol.FileClient}.

A reader knows its reply's shape (through L{echofile.wire}) and nothing about
the connection beyond the channel: send a line now, let held lines go, read
the next bytes raw.  C{done} is set once its reply is complete; the client
then fires C{deferred} with C{result}.  The readers by kind:
L{echofile.client.replies} (one-line and counted replies) and
L{echofile.client.bodies} (FILE and RESUME).
"""

from __future__ import annotations

import typing
from typing import Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from echofile import wire
from echofile.client.errors import ConnectionClosed, ProtocolViolation, ServerError
from echofile.text import sanitize

_T = TypeVar("_T")


class Channel(typing.Protocol):
    """What a reader may ask of the connection."""

    def sendLine(self, line: str) -> None:
        """Write a command now, ahead of any held ones."""

    def releaseHeld(self) -> None:
        """Let the commands held behind this one go."""

    def readRaw(self) -> None:
        """The next bytes are a body: hand them to L{Reader.rawDataReceived}."""


def unexpected(what: str, line: str) -> ProtocolViolation:
    """A violation that quotes the server's line, neutralised and cut short."""
    shown = sanitize(line[:200]) + ("..." if len(line) > 200 else "")
    return ProtocolViolation(f"{what}: {shown!r}")


class Reader:
    """One pending command's reply."""

    #: True while the next line would be the start of a reply (where ``*`` events may come).
    atReplyStart = True

    def __init__(self) -> None:
        self.deferred: Deferred = Deferred()
        self.done = False
        self.result: object = None

    def lineReceived(self, channel: Channel, line: str) -> None:
        raise NotImplementedError()

    def rawDataReceived(self, channel: Channel, data: bytes) -> bytes | None:
        """Body bytes; returns what follows the body once it ended, else C{None}."""
        raise ProtocolViolation("unexpected raw data")

    def connectionLost(self, serverSaid: str | None) -> Failure:
        return Failure(ConnectionClosed("connection closed before the reply arrived", serverSaid))

    def finish(self, result: object) -> None:
        """Complete; the client fires C{deferred} once this reader left the queue."""
        self.done = True
        self.result = result

    def error(self, line: str) -> None:
        """An error reply, or a line that is no reply at all."""
        if line.startswith("!"):
            self.finish(Failure(ServerError(line[1:])))
        else:
            raise unexpected("unexpected reply", line)

    def parsed(self, parse: Callable[[str], _T | None], line: str, violation: str) -> _T | None:
        """
        C{parse(line)}, for a reply's first line: a malformed reply is a
        violation (C{violation} followed by wire's reason); a line that is
        not this reply (C{None}) is handed to L{error}.
        """
        try:
            result = parse(line)
        except wire.MalformedReply as e:
            raise ProtocolViolation(f"{violation} {e}") from None
        if result is None:
            self.error(line)
        return result
