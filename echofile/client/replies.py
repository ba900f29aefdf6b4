"""
Reply readers by kind: one-line replies (USER/AUTH, NICK, HASH, the rest)
and counted ones (LIST, WHO).  The base is L{echofile.client.reader}, the
body readers (FILE, RESUME) are L{echofile.client.bodies}; both are
importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.python.failure import Failure

from echofile import wire
from echofile.client.bodies import DRAIN_LIMIT, FileReader, FileSink, ResumeReader
from echofile.client.errors import ConnectionClosed, ProtocolViolation
from echofile.client.reader import Channel, Reader, unexpected

__all__ = [
    "COLLECT_LIMIT", "DRAIN_LIMIT", "Channel", "CountedReader", "Entry", "FileReader", "FileSink", "HashReader",
    "ListReader", "LoginReader", "NickReader", "Reader", "ResumeReader", "SimpleReader", "WhoReader", "unexpected",
]

#: The most text a collected (not streamed) LIST or WHO reply may hold.
COLLECT_LIMIT = 32 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One line of a listing; C{size} is C{None} for a folder (whose name has no trailing ``/``)."""

    name: str
    size: int | None

    @property
    def isDirectory(self) -> bool:
        return self.size is None


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
            count = self.parsed(self.parseHeader, line, "server announced")
            if count is None:
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


class HashReader(Reader):
    """``HASH name``: fires with a L{wire.Hashed}; a digest that is not 64 lowercase hex is a violation."""

    def lineReceived(self, channel: Channel, line: str) -> None:
        hashed = self.parsed(_parseHashed, line, "server sent a")
        if hashed is not None:
            self.finish(hashed)


def _parseHashed(line: str) -> wire.Hashed | None:
    return wire.parseHashed(line) if line.startswith("#") else None
