"""
Reply readers: one per pending command, fed the reply's lines (and a file
body's bytes) by L{echofile.client.protocol.FileClient}.

A reader knows its reply's shape (through L{echofile.wire}) and nothing about
the connection beyond the narrow L{Channel} it is handed: send a line now,
let held lines go, read the next bytes raw.  C{done} is set once its reply
is complete; the client then fires C{deferred} with C{result}.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from echofile import wire
from echofile.client.errors import ConnectionClosed, ProtocolViolation, ServerError, TransferIncomplete
from echofile.text import sanitize

#: A body whose sink failed is still read to its end (so the session goes on)
#: only when that costs at most this many bytes; beyond, the connection is dropped.
DRAIN_LIMIT = 16 * 1024 * 1024

#: The most text a collected (not streamed) LIST or WHO reply may hold.
COLLECT_LIMIT = 32 * 1024 * 1024


class Channel(typing.Protocol):
    """What a reader may ask of the connection."""

    def sendLine(self, line: str) -> None:
        """Write a command now, ahead of any held ones."""

    def releaseHeld(self) -> None:
        """Let the commands held behind this one go."""

    def readRaw(self) -> None:
        """The next bytes are a body: hand them to L{Reader.rawDataReceived}."""


class FileSink(typing.Protocol):
    """Where a file body goes: told its size first, then given it chunk by chunk."""

    def begin(self, size: int) -> None: ...

    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One line of a listing; C{size} is C{None} for a folder (whose name has no trailing ``/``)."""

    name: str
    size: int | None

    @property
    def isDirectory(self) -> bool:
        return self.size is None


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


class SimpleReader(Reader):
    """A command answered by one line; fires with the reply text (without ``#``)."""

    def __init__(self, expect: str | None = None) -> None:
        super().__init__()
        self._expect = expect

    def lineReceived(self, channel: Channel, line: str) -> None:
        if line.startswith("#") and (self._expect is None or line == self._expect):
            self.finish(line[1:])
        else:
            self.error(line)


class NickReader(Reader):
    """``NICK name``: fires with the new chat name (``~name``)."""

    def lineReceived(self, channel: Channel, line: str) -> None:
        name = wire.parseNick(line) if line.startswith("#") else None
        if name is not None:
            self.finish(name)
        else:
            self.error(line)


class LoginReader(Reader):
    """
    ``USER name`` then, only once that was accepted, ``AUTH password``.

    AUTH must not be pipelined behind USER: if USER were refused, the AUTH would
    log in to the default account.  Commands queued meanwhile are held back by
    the client and let go once this reply is in.
    """

    def __init__(self, password: str) -> None:
        super().__init__()
        self._password = password
        self._stage = "USER"

    def lineReceived(self, channel: Channel, line: str) -> None:
        if self._stage == "USER" and line.startswith("#"):
            self._stage = "AUTH"
            channel.sendLine("AUTH " + self._password)
            return
        channel.releaseHeld()
        if line.startswith("#"):
            self.finish(line[1:])
        else:
            self.error(line)

    def connectionLost(self, serverSaid: str | None) -> Failure:
        return Failure(ConnectionClosed(f"connection closed before the {self._stage} reply arrived", serverSaid))


class CountedReader(Reader):
    """
    A header that announces a count, then that many lines (``LIST``,
    ``WHO``).  A count over C{limit} is refused at the header.  Each item goes
    to C{onItem} if given (nothing is kept: a listing of any length streams),
    else is collected, up to L{COLLECT_LIMIT} bytes of text, and the reader
    fires with the list.
    """

    what = "items"

    def __init__(self, limit: int, onItem: Callable[[object], None] | None = None) -> None:
        super().__init__()
        self._limit = limit
        self._onItem = onItem
        self._remaining: int | None = None
        self._items: list[object] = []
        self._collected = 0

    def parseHeader(self, line: str) -> int | None:
        raise NotImplementedError()

    def parseItem(self, line: str) -> object:
        raise NotImplementedError()

    def lineReceived(self, channel: Channel, line: str) -> None:
        if self._remaining is None:
            try:
                count = self.parseHeader(line)
            except wire.MalformedReply as e:
                raise ProtocolViolation(f"server announced {e}") from None
            if count is None:
                self.error(line)
                return
            if count > self._limit:
                raise ProtocolViolation(f"server announced {count} {self.what}, more than the limit of {self._limit}")
            self._remaining = count
            self.atReplyStart = False
        else:
            item = self.parseItem(line)
            if self._onItem is not None:
                self._onItem(item)
            else:
                self._collected += len(line)
                if self._collected > COLLECT_LIMIT:
                    raise ProtocolViolation(f"server sent more than {COLLECT_LIMIT} bytes of {self.what}")
                self._items.append(item)
            self._remaining -= 1
        if self._remaining == 0:
            self.finish(self._items)


class ListReader(CountedReader):
    """``LIST``; fires with a list of L{Entry} (empty when they went to C{onItem})."""

    what = "entries"

    def parseHeader(self, line: str) -> int | None:
        header = wire.parseEntries(line)
        return None if header is None else header.count

    def parseItem(self, line: str) -> Entry:
        try:
            entry = wire.parseEntry(line)
        except wire.MalformedReply as e:
            raise ProtocolViolation(f"server listed an {e}") from None
        if entry is None:
            raise unexpected("unexpected listing line", line)
        return Entry(entry.name, entry.size)


class WhoReader(CountedReader):
    """``WHO``; fires with the chat names."""

    what = "users"

    def parseHeader(self, line: str) -> int | None:
        return wire.parseUsers(line)

    def parseItem(self, line: str) -> str:
        return line


class FileReader(Reader):
    """
    ``FILE name``: header, exactly I{size} raw bytes, CR LF, trailer.

    Fires with the size once the trailer arrived.  If the sink fails (disk
    full, or it refused the size) the rest of the body is still read, so the
    session stays usable, when that is at most L{DRAIN_LIMIT} bytes; a longer
    rest ends the session (L{abandoned}), and the request fails with the
    sink's own error either way.
    """

    def __init__(self, sink: FileSink, drainLimit: int = DRAIN_LIMIT) -> None:
        super().__init__()
        self._sink = sink
        self._drainLimit = drainLimit
        self._size = 0
        self._remaining = 0
        self._tail = b""  # collects the CR LF after the body
        self._stage = "header"
        self.sinkFailure: Failure | None = None

    @property
    def abandoned(self) -> bool:
        """The sink failed and the rest of the body is too long to read for nothing."""
        return self.sinkFailure is not None and self._remaining > self._drainLimit

    def lineReceived(self, channel: Channel, line: str) -> None:
        if self._stage == "header":
            try:
                header = self.parseHeader(line)
            except wire.MalformedReply as e:
                raise ProtocolViolation(f"server announced a {e}") from None
            if header is None:
                self.error(line)
                return
            body, announced = header
            self._size = self._remaining = body
            self.atReplyStart = False
            self._stage = "body"
            self._toSink(self._sink.begin, announced)
            channel.readRaw()
        elif self._stage == "trailer":
            if not line.startswith("#"):
                raise unexpected("unexpected line after a file body", line)
            self.finish(self.sinkFailure if self.sinkFailure is not None else self._size)
        else:
            raise ProtocolViolation(f"line in {self._stage} stage")

    def parseHeader(self, line: str) -> tuple[int, int] | None:
        """The body's length and the size the sink is told, or C{None} if C{line} is not the header."""
        header = wire.parseSending(line)
        return None if header is None else (header.size, header.size)

    def rawDataReceived(self, channel: Channel, data: bytes) -> bytes | None:
        if self._remaining:
            chunk, data = data[: self._remaining], data[self._remaining :]
            self._remaining -= len(chunk)
            self._toSink(self._sink.write, chunk)
            if self._remaining:
                return None
        need = 2 - len(self._tail)
        self._tail += data[:need]
        data = data[need:]
        if len(self._tail) < 2:
            return None
        if self._tail != b"\r\n":
            raise ProtocolViolation(f"file body not followed by CR LF but {self._tail!r}")
        self._stage = "trailer"
        return data

    def _toSink(self, method: Callable, argument: object) -> None:
        if self.sinkFailure is None:
            try:
                method(argument)
            except Exception:
                self.sinkFailure = Failure()

    def connectionLost(self, serverSaid: str | None) -> Failure:
        if self.sinkFailure is not None:
            return self.sinkFailure
        if self._stage == "body":
            return Failure(TransferIncomplete(self._size - self._remaining, self._size, serverSaid))
        return super().connectionLost(serverSaid)


class ResumeReader(FileReader):
    """
    ``RESUME offset name``: like FILE, but the body is the file from byte
    C{offset} on.  The sink is told the whole file's size (offset plus the
    body: it holds the first bytes already); a header for another offset is
    a protocol violation.  Fires with the body's length.
    """

    def __init__(self, sink: FileSink, offset: int, drainLimit: int = DRAIN_LIMIT) -> None:
        super().__init__(sink, drainLimit)
        self._offset = offset

    def parseHeader(self, line: str) -> tuple[int, int] | None:
        header = wire.parseResuming(line)
        if header is None:
            return None
        if header.offset != self._offset:
            raise ProtocolViolation(f"asked to resume at byte {self._offset}, the server sends from byte {header.offset}")
        return header.remaining, header.offset + header.remaining


class HashReader(Reader):
    """``HASH name``: fires with a L{wire.Hashed}; a digest that is not 64 lowercase hex is a violation."""

    def lineReceived(self, channel: Channel, line: str) -> None:
        try:
            hashed = wire.parseHashed(line) if line.startswith("#") else None
        except wire.MalformedReply as e:
            raise ProtocolViolation(f"server sent a {e}") from None
        if hashed is not None:
            self.finish(hashed)
        else:
            self.error(line)
