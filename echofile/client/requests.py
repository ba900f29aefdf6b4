"""
The request methods of L{echofile.client.protocol.FileClient}: one per
command, each writing its command at once and returning a L{Deferred} for
its reply, read by the matching reader of L{echofile.client.replies}.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred

from echofile import wire
from echofile.client.replies import (
    Entry,
    FileReader,
    FileSink,
    HashReader,
    ListReader,
    LoginReader,
    NickReader,
    Reader,
    ResumeReader,
    SimpleReader,
    WhoReader,
)


class Requests:
    """The commands; the protocol class supplies C{_request}, C{_holdOutput} and C{_maxEntries}."""

    _maxEntries: int

    def _request(self, request: Reader, line: str) -> Deferred:
        raise NotImplementedError()

    def _holdOutput(self) -> None:
        raise NotImplementedError()

    def login(self, password: str, user: str | None = None) -> Deferred[str]:
        """Log in: the default account without C{user}, else C{user}'s.  Fires with the reply text."""
        _checkArgument(password)
        if user is None:
            return self._request(SimpleReader(), "AUTH " + password)
        _checkArgument(user)
        d = self._request(LoginReader(password), "USER " + user)
        self._holdOutput()
        return d

    def get(self, name: str, sink: FileSink) -> Deferred[int]:
        """Fetch C{name} into C{sink}; fires with its size once the whole body and the trailer came."""
        _checkArgument(name)
        return self._request(FileReader(sink), "FILE " + name)

    def resume(self, name: str, offset: int, sink: FileSink) -> Deferred[int]:
        """
        Fetch C{name} from byte C{offset} into C{sink}, which is told the whole
        file's size; fires with the number of bytes received.
        """
        _checkArgument(name)
        if offset < 0:
            raise ValueError(f"a negative offset: {offset}")
        return self._request(ResumeReader(sink, offset), f"RESUME {offset} {name}")

    def hash(self, name: str) -> Deferred[wire.Hashed]:
        """The server's size and SHA-256 of C{name} (an older server answers ``!Invalid command.``)."""
        _checkArgument(name)
        return self._request(HashReader(), "HASH " + name)

    def list(
        self, directory: str | None = None, onEntry: Callable[[Entry], None] | None = None
    ) -> Deferred[list[Entry]]:
        """
        List a folder (the root without C{directory}); fires with a list of
        L{Entry}, or, with C{onEntry}, hands each entry to it as it arrives
        (nothing kept) and fires with an empty list.
        """
        reader = ListReader(self._maxEntries, onEntry)  # type: ignore[arg-type]
        if directory:
            _checkArgument(directory)
            return self._request(reader, "LIST " + directory)
        return self._request(reader, "LIST")

    def say(self, text: str) -> Deferred[str]:
        """Say C{text} to every other logged-in session."""
        _checkArgument(text)
        return self._request(SimpleReader(), "SAY " + text)

    def msg(self, user: str, text: str) -> Deferred[str]:
        """Say C{text} to C{user} only."""
        _checkArgument(user)
        _checkArgument(text)
        return self._request(SimpleReader(), f"MSG {user} {text}")

    def nick(self, name: str) -> Deferred[str]:
        """Take the chat name C{~name} (guests only); fires with it, ``~`` included."""
        _checkArgument(name)
        return self._request(NickReader(), "NICK " + name)

    def who(self) -> Deferred[list[str]]:
        """Who is logged in; fires with the sorted chat names."""
        return self._request(WhoReader(self._maxEntries), "WHO")

    def quit(self) -> Deferred[str]:
        """Say goodbye; the server closes the connection after its reply."""
        return self._request(SimpleReader(expect=wire.BYE), "QUIT")


def _checkArgument(text: str) -> None:
    """A command argument must stay on its line, or it would become another command."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"line breaks are not allowed in a command argument: {text!r}")
