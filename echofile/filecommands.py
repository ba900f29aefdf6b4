"""
FILE, RESUME, HASH and LIST: the commands that read the served tree.

What may be opened is the avatar's business (L{echofile.share}, where a
path is confined); sending a body is L{echofile.transfer}'s, a listing
L{echofile.listing}'s, a digest L{echofile.hashing}'s.  Here: the replies
around them, and the holds that keep replies in command order.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from echofile import wire
from echofile.commands import COMMAND_LINE, CommandProtocol
from echofile.eventlog import loggable
from echofile.hashing import FileDigest, HashUnavailable
from echofile.listing import Listing, ListingSender
from echofile.names import NotAvailable
from echofile.share import IShare, OpenedFile
from echofile.text import sanitize
from echofile.transfer import BodySender
from echofile.wire import CommandError

#: A RESUME offset: ASCII decimal digits only (int() would also take "+5", " 5", "1_0" and "٣").
_OFFSET = re.compile(r"[0-9]{1,20}", re.ASCII)

#: A refused command's log line, by whether the session is logged in and the command had an argument.
_REFUSED = {
    (False, False): "files: {peer} {command} refused: {why}",
    (False, True): "files: {peer} {command} {argument} refused: {why}",
    (True, False): "files: {peer} ({user}) {command} refused: {why}",
    (True, True): "files: {peer} ({user}) {command} {argument} refused: {why}",
}


class Refusal(CommandError):
    """
    A tree command refused: the reply, and why for the log, which may say
    more than the client learns (the reply is the same for every name that
    cannot be served, on purpose: L{NotAvailable}).
    """

    def __init__(self, reply: str, why: str) -> None:
        super().__init__(reply)
        self.why = why


def _whyRefused(error: CommandError) -> str:
    why = getattr(error, "why", None)
    if why is not None:
        return why
    return "not logged in" if error.reply == wire.NOT_LOGGED_IN else error.reply.rstrip(".")


def _whyUnavailable(error: BaseException) -> str:
    """What the operator may learn of why a name was not served (the errno, never the client's name)."""
    cause = error.__cause__
    if isinstance(cause, OSError) and cause.errno is not None:
        return os.strerror(cause.errno).lower()
    if error.args == ("not a regular file",):
        return "not a regular file"
    return "not served (outside the root, hidden or unclean, or the server's own file)"


_Command = TypeVar("_Command", bound=Callable[..., Any])


def _refusalLogged(command: str) -> Callable[[_Command], _Command]:
    """
    Log a refusal of C{command} (raised now, or failing its Deferred) once,
    with why, through the address's log budget; the reply is still the one
    error mapping's (L{CommandProtocol._commandFailed}).
    """

    def decorate(method: _Command) -> _Command:
        @functools.wraps(method)
        def run(self: "FileCommands", argument: str) -> Any:
            try:
                result = method(self, argument)
            except CommandError as e:
                self._logRefusal(command, argument, e)
                raise
            if isinstance(result, Deferred):
                result.addErrback(self._refusedLater, command, argument)
            return result

        return run  # type: ignore[return-value]

    return decorate


class FileCommands(CommandProtocol):
    """The tree's commands of L{echofile.files.FileSession}."""

    _hashing: Deferred[FileDigest] | None = None  # a HASH waiting for its digest

    def _letGo(self) -> None:
        """Nobody will read a digest being made: give back its place in the queue (or its thread) and descriptor."""
        super()._letGo()
        if self._hashing is not None:
            hashing, self._hashing = self._hashing, None
            hashing.cancel()

    def _logRefusal(self, command: str, argument: str, error: CommandError) -> None:
        """One info line per refused tree command, within the address's log budget."""
        avatar = self.avatar
        self._event(
            LogLevel.info, _REFUSED[avatar is not None, bool(argument)], command=command,
            argument=loggable(argument), why=_whyRefused(error), user=loggable(avatar.user) if avatar else None,
        )

    def _refusedLater(self, failure: Failure, command: str, argument: str) -> Failure:
        if failure.check(CommandError):
            self._logRefusal(command, argument, failure.value)
        return failure

    def _open(self, share: IShare, name: str) -> OpenedFile:
        try:
            return share.open(name)
        except NotAvailable as e:
            raise Refusal(wire.NOT_OPENED.format(name=sanitize(name)), _whyUnavailable(e)) from None

    @_refusalLogged("FILE")
    def cmd_FILE(self, name: str) -> Deferred[None]:
        share = self._requireLogin()
        if not name:
            raise Refusal(wire.USAGE.format(synopsis="FILE <name>"), "usage")
        opened = self._open(share, name)
        return self._sendBody(share, opened, name, wire.SENDING.format(name=sanitize(name), size=opened.size))

    @_refusalLogged("RESUME")
    def cmd_RESUME(self, argument: str) -> Deferred[None]:
        share = self._requireLogin()
        match = COMMAND_LINE.match(argument)
        if match is None or not match.group(2) or not _OFFSET.fullmatch(match.group(1)):
            raise Refusal(wire.USAGE.format(synopsis="RESUME <offset> <name>"), "usage")
        offset, name = int(match.group(1)), match.group(2)
        opened = self._open(share, name)
        if offset > opened.size:
            opened.close()
            raise Refusal(
                wire.OFFSET_PAST_END.format(offset=offset, name=sanitize(name), size=opened.size), "offset past the end",
            )
        header = wire.SENDING_FROM.format(name=sanitize(name), offset=offset, size=opened.size - offset)
        return self._sendBody(share, opened, name, header, offset, "RESUME")

    def _sendBody(
        self, share: IShare, opened: OpenedFile, name: str, header: str, offset: int = 0, command: str = "FILE",
    ) -> Deferred[None]:
        """The header, the body from C{offset} on, CRLF and the trailer (FILE, RESUME)."""
        shown = sanitize(name)
        self.reply(header)
        started = self._clock.seconds()
        sender = BodySender(opened, onProgress=lambda _: self._timer.touch(), offset=offset, command=command)
        self._sendingStarted(sender)
        d = sender.beginSending(self.transport)

        def sent(size: int) -> None:
            self._sendingEnded()
            self.transport.write(b"\r\n")
            self.reply(wire.SENT.format(name=shown))
            self._replyComplete()
            self._filesSent += 1
            self._bytesSent += size
            self._audit(
                LogLevel.info, "files: {peer} ({user}) sent {file} ({size} bytes) in {duration:.3f}s",
                file=loggable(opened.path), size=size, offset=offset, user=loggable(share.user),
                duration=self._clock.seconds() - started,
            )

        def failed(failure: Failure) -> Failure:
            self._transfer = None
            return failure

        d.addCallbacks(sent, failed)
        return d

    @_refusalLogged("HASH")
    def cmd_HASH(self, name: str) -> None:
        share = self._requireLogin()
        if not name:
            raise Refusal(wire.USAGE.format(synopsis="HASH <name>"), "usage")
        opened = self._open(share, name)
        path = opened.path

        def cannotOpen() -> Refusal:
            # A new one each time, never kept in this frame or a closure: a raised error's
            # traceback holds the frame, which would hold the error (a cycle keeping the session).
            return Refusal(wire.NOT_OPENED.format(name=sanitize(name)), "could not be read")

        try:
            d = self.factory.hashes.digest(opened)
        except HashUnavailable:
            raise cannotOpen() from None
        self._hashing = d
        # The wait may be long (the job cap): keep reading, so that a client
        # that goes away is noticed and its job cancelled at once.
        self._hold("hash", keepReading=True)

        def answer(digest: FileDigest) -> None:
            self._hashing = None
            self._timer.touch()  # waiting for the digest was no idleness of the client
            self._event(
                LogLevel.info, "files: {peer} ({user}) SHA-256 of {file} ({size} bytes)",
                file=loggable(path), size=digest.size, user=loggable(share.user),
            )
            if not self._ending:
                self.reply(wire.DIGEST.format(name=sanitize(name), size=digest.size, sha256=digest.sha256))

        def unavailable(failure: Failure) -> Failure:
            # Returns its Failure, never raises (nor traps): raised here, an error's traceback
            # holds this frame, which holds the Failure, which holds the error: a cycle.
            self._hashing = None
            if not failure.check(HashUnavailable):
                return failure  # cancelled: the session went away
            refusal = cannotOpen()
            self._logRefusal("HASH", name, refusal)  # after cmd_HASH returned: not seen by its decorator
            return Failure(refusal)

        d.addCallbacks(answer, unavailable)
        d.addErrback(self._commandFailed)
        d.addBoth(lambda _: self._release("hash"))

    @_refusalLogged("LIST")
    def cmd_LIST(self, name: str) -> Deferred[None]:
        share = self._requireLogin()
        shown = sanitize(name) if name else "/"

        def notOpened(failure: Failure) -> None:
            failure.trap(NotAvailable)
            raise Refusal(wire.FOLDER_NOT_OPENED.format(name=shown), _whyUnavailable(failure.value))

        # Read off the reactor thread (and shared with other sessions listing the
        # same folder); the session reads no further command until it is sent.
        d = share.listing(name or "/")
        d.addCallbacks(self._sendListing, notOpened, callbackArgs=(shown,))
        return d

    def _sendListing(self, listing: Listing, shown: str) -> Deferred[None] | None:
        """Stream the header and the entries as the client reads; no event comes in between."""
        if not self._connected or self._ending:
            return None
        header = (wire.ENTRIES.format(count=listing.count, folder=shown) + "\r\n").encode("utf-8")
        sender = ListingSender(header, listing, onProgress=lambda _: self._timer.touch())
        self._sendingStarted(sender)
        if "output" in self._holds:  # the transport pauses the listing now, not the session
            self._holds.discard("output")  # type: ignore[union-attr]
        d = sender.beginSending(self.transport)

        def failed(failure: Failure) -> Failure:
            self._transfer = None
            return failure

        def sent(count: int) -> None:
            self._sendingEnded()
            self._replyComplete()

        d.addCallbacks(sent, failed)
        return d
