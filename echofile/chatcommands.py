"""
SAY, MSG, WHO and NICK: the commands that ask the chat service (L{echofile.chat.IChat}).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from echofile import wire
from echofile.auth import isGuest
from echofile.chat import ChatUnavailable, NicknameInUse, NotOnline
from echofile.commands import COMMAND_LINE, CommandProtocol
from echofile.text import sanitize
from echofile.wire import CommandError

_NICKNAME = re.compile(r"[A-Za-z0-9._-]{1,32}")


class ChatCommands(CommandProtocol):
    """The chat commands of L{echofile.files.FileSession}."""

    def _askChat(self, request: Callable[[], Any], answer: Callable[[Any], None]) -> Deferred[None]:
        """
        Run one chat request and C{answer} with its result.

        The chat service may answer later (a broker): the session reads no
        further command meanwhile, so replies stay in command order.  An
        unavailable chat service becomes its one reply here.
        """
        if not self.factory.chat.available:
            # Answered without asking it: a broker's requests fail inside inlineCallbacks, where
            # Twisted throws the Failure into the generator from a frame that holds it, and the
            # error's traceback then holds that frame: a cycle (keeping the session) per command.
            raise CommandError(wire.CHAT_UNAVAILABLE)

        def answered(result: Any) -> None:
            if not self._ending:
                answer(result)

        d = maybeDeferred(request)
        d.addCallbacks(answered, _chatUnavailable)
        return d

    def cmd_SAY(self, text: str) -> Deferred[None]:
        self._requireLogin()
        if not text:
            raise CommandError(wire.USAGE.format(synopsis="SAY <text>"))
        return self._askChat(lambda: self.factory.chat.say(self, text), lambda _: self.reply(wire.SAID))

    def cmd_MSG(self, argument: str) -> Deferred[None]:
        self._requireLogin()
        match = COMMAND_LINE.match(argument)
        if match is None or not match.group(2):
            raise CommandError(wire.USAGE.format(synopsis="MSG <user> <text>"))
        recipient, text = match.group(1), match.group(2)

        def notOnline(failure: Failure) -> Failure:
            if failure.check(NotOnline):
                return Failure(CommandError(wire.NO_SUCH_USER.format(recipient=sanitize(recipient))))
            return failure

        d = self._askChat(
            lambda: self.factory.chat.message(self, recipient, text), lambda _: self.reply(wire.SENT_TO.format(recipient=recipient))
        )
        return d.addErrback(notOnline)

    def cmd_WHO(self, argument: str) -> Deferred[None]:
        self._requireLogin()
        return self._askChat(
            self.factory.chat.online, lambda names: self._replyLines([wire.USERS.format(count=len(names)), *names])
        )

    def cmd_NICK(self, name: str) -> Deferred[None]:
        """
        A guest picks its chat name.  The checks run in this order: login,
        usage, guest, syntax (all without the chat service), then the chat
        service (unavailable, in use).
        """
        share = self._requireLogin()
        if not name:
            raise CommandError(wire.USAGE.format(synopsis="NICK <name>"))
        if not isGuest(share.user):
            raise CommandError(wire.GUESTS_ONLY_NICK)
        if not _NICKNAME.fullmatch(name):
            raise CommandError(wire.INVALID_USER_NAME)

        def inUse(failure: Failure) -> Failure:
            if failure.check(NicknameInUse):
                return Failure(CommandError(wire.NICK_IN_USE.format(name=name)))
            return failure

        d = self._askChat(
            lambda: self.factory.chat.rename(self, name), lambda new: self.reply(wire.NOW_NAMED.format(name=new))
        )
        return d.addErrback(inUse)


def _chatUnavailable(failure: Failure) -> Failure:
    # Errbacks here return their Failure, never raise or trap: a raise inside an errback
    # extends the error's traceback with the errback's frame, which holds the Failure, which
    # holds the error, a reference cycle that kept the session for the garbage collector.
    if failure.check(ChatUnavailable):
        return Failure(CommandError(wire.CHAT_UNAVAILABLE))
    return failure
