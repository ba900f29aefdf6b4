"""
The file protocol's commands: dispatch of a line to ``cmd_<NAME>`` and the
one place where a failure becomes a reply.

Every failure is an exception: L{CommandError} carries its reply text, and
L{CommandProtocol._commandFailed} turns any exception into a reply (or, for
the errors that end a session, into a goodbye).  The commands themselves
live with what they drive (L{echofile.login}, L{echofile.filecommands},
L{echofile.chatcommands}); L{echofile.files.FileSession} puts them together.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from echofile import wire
from echofile.eventlog import loggable
from echofile.session import LineSession
from echofile.share import IShare
from echofile.transfer import TransferInterrupted
from echofile.wire import CommandError

if TYPE_CHECKING:
    from echofile.files import FilesFactory

#: A command and its argument: the rest of the line after the first run of blanks.
COMMAND_LINE = re.compile(r"([^ \t]+)[ \t]*(.*)", re.DOTALL)


class CommandProtocol(LineSession):
    """Dispatch, the error mapping, HELP and QUIT; the avatar once logged in."""

    def __init__(self, factory: "FilesFactory") -> None:
        super().__init__(factory)
        self.avatar: IShare | None = None

    def _requireLogin(self) -> IShare:
        if self.avatar is None:
            raise CommandError(wire.NOT_LOGGED_IN)
        return self.avatar

    def _run(self, text: str) -> None:
        """Run one command; a Deferred result holds further input until it fires."""
        try:
            result = self._dispatch(text)
        except Exception:
            self._commandFailed(Failure())
            return
        if isinstance(result, Deferred):
            self._hold("command")
            result.addErrback(self._commandFailed)
            result.addBoth(lambda _: self._release("command"))

    def _dispatch(self, text: str) -> Deferred[None] | None:
        match = COMMAND_LINE.match(text)
        assert match is not None  # text is non-empty and has no leading blank
        command, argument = match.group(1), match.group(2)
        handler = None
        if command.isascii() and command.isalpha():
            handler = getattr(self, "cmd_" + command.upper(), None)
        if handler is None:
            raise CommandError(wire.INVALID_COMMAND)
        return handler(argument)

    def _commandFailed(self, failure: Failure) -> None:
        """The one place where an exception becomes what the client sees."""
        if failure.check(CancelledError):
            return  # a HASH of a session that ended meanwhile: nobody to tell
        if not self._connected:
            if not failure.check(CommandError, TransferInterrupted):
                self._log.failure("files: command from {peer} failed after it left", failure, peer=self._peer)
            return
        if failure.check(CommandError):
            if self._ending:  # the session already said its last word
                return
            error = failure.value
            if error.closes:
                self._because(error.reply.rstrip("."))
                self.endSession(wire.error(error.reply))
            else:
                self.reply(wire.error(error.reply))
        elif failure.check(TransferInterrupted, ConnectionDone, ConnectionLost):
            self._log.warn("files: transfer to {peer} cut short: {reason}", peer=self._peer, reason=loggable(failure.value))
            self._cutShort()
        else:
            self._log.failure("files: command from {peer} failed", failure, peer=self._peer)
            if not self._ending:
                self.reply(wire.error(wire.INTERNAL_ERROR))

    def cmd_HELP(self, argument: str) -> None:
        self.reply(wire.HELP)

    def cmd_QUIT(self, argument: str) -> None:
        self._because("QUIT")
        self.endSession(wire.BYE)
