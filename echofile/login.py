"""
USER and AUTH: the login policy of one session, and the commands that drive it.

L{LoginPolicy} is the policy as a small object on the clock (like the
transit relay's state objects): the selected user, three strikes per
connection, the failure delay and the per-address penalties.  The password
itself is checked by the portal (L{echofile.auth.login}), never here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from echofile import wire
from echofile.auth import DEFAULT_USER, countLockedOut, countLogin, login
from echofile.eventlog import loggable
from echofile.lockout import LoginPenalties
from echofile.commands import CommandProtocol
from echofile.share import IShare
from echofile.tls import cleartextOverNetwork
from echofile.wire import CommandError

if TYPE_CHECKING:
    from echofile.files import FilesFactory

MAX_AUTH_FAILURES = 3

_USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class LoginPolicy:
    """
    Who may try to log in on one connection, and how fast.

    @ivar selected: the user the next AUTH is for; None after a refused
        USER (the next AUTH must fail, not fall back to the guest).
    @ivar failures: failed AUTHs on this connection.
    """

    def __init__(self, clock: IReactorTime, delay: float, penalties: LoginPenalties | None) -> None:
        self._clock = clock
        self._delay = delay
        self._penalties = penalties
        self.selected: str | None = DEFAULT_USER
        self.failures = 0
        self._attempted = 0.0

    def select(self, name: str) -> None:
        """USER: remember C{name}, or refuse it (and every AUTH until the next USER)."""
        if not name or not _USER_NAME.fullmatch(name):
            self.selected = None
            raise CommandError(wire.INVALID_USER_NAME if name else wire.USAGE.format(synopsis="USER <name>"))
        self.selected = name

    def attempt(self) -> None:
        """An AUTH arrived: its answer, if it fails, is due C{delay} seconds from now."""
        self._attempted = self._clock.seconds()

    def lockedOut(self, key: str) -> bool:
        return self._penalties is not None and self._penalties.isLockedOut(key)

    def failed(self, key: str) -> CommandError:
        """Count a failed AUTH here and for the address; the error to answer with."""
        self.failures += 1
        if self._penalties is not None:
            self._penalties.recordFailure(key)
        if self.failures >= MAX_AUTH_FAILURES:
            return CommandError(wire.TOO_MANY_FAILURES, closes=True)
        return CommandError(wire.BAD_PASSWORD)

    def answerLater(self, error: CommandError) -> Deferred[None]:
        """
        Fail with C{error} the AUTH failure delay after the AUTH arrived
        (L{attempt}), so guessing stays slow, and at the same moment however
        long the check itself took: an account whose bcrypt cost is lower
        than the unknown-name dummy's must not be told apart by its answer's
        timing.  (A check that takes longer than the delay still shows.)
        """

        def answer() -> Failure:
            # Returned, not raised: a raised error's traceback holds this frame, which holds the
            # error, a reference cycle that left every failed login's session to the garbage collector.
            return Failure(error)

        due = self._attempted + self._delay - self._clock.seconds()
        return deferLater(self._clock, max(0.0, due), answer)


class LoginCommands(CommandProtocol):
    """USER and AUTH of L{echofile.files.FileSession}; logging out when the session ends."""

    def __init__(self, factory: "FilesFactory") -> None:
        super().__init__(factory)
        self._loginPolicy: LoginPolicy | None = None  # made by the first USER or AUTH: idle sessions never need one
        self._logout: Callable[[], None] | None = None

    @property
    def _login(self) -> LoginPolicy:
        if self._loginPolicy is None:
            self._loginPolicy = LoginPolicy(self._clock, self.factory.authFailureDelay, self.factory.penalties)
        return self._loginPolicy

    def _letGo(self) -> None:
        """Leave presence at once (the connection itself may linger a little)."""
        super()._letGo()
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    @property
    def _failures(self) -> int:
        return self._loginPolicy.failures if self._loginPolicy is not None else 0

    def cmd_USER(self, argument: str) -> None:
        self._login.select(argument)
        self.reply(wire.USER_ACCEPTED.format(user=argument))

    def cmd_AUTH(self, password: str) -> Deferred[None]:
        if self.avatar is not None:
            raise CommandError(wire.ALREADY_LOGGED_IN)
        if not password:
            raise CommandError(wire.USAGE.format(synopsis="AUTH <password>"))
        self._login.attempt()
        user = self._login.selected
        if self._login.lockedOut(self._peerKey):
            self._event(LogLevel.info, "files: AUTH from locked-out {peer} refused")
            countLockedOut()
            return self._login.answerLater(CommandError(wire.TOO_MANY_FAILURES, closes=True))
        if user is None:
            d: Deferred[Any] = fail(UnauthorizedLogin("AUTH after a refused USER")).addBoth(countLogin)
            user = "(refused name)"
        else:
            d = login(self.factory.portal, user, password, self)
        d.addCallbacks(self._loggedIn, self._loginFailed, errbackArgs=(user,))
        return d

    def _loggedIn(self, result: tuple[Any, IShare, Callable[[], None]]) -> None:
        _, avatar, logout = result
        if not self._connected or self._ending:
            logout()
            return
        self._timer.clearDeadline()
        self.avatar, self._logout = avatar, logout
        # Audit lines: within the address's budget (a login loop from one address is bounded), never the service's.
        self._audit(LogLevel.info, "files: {peer} logged in as {user}", user=loggable(avatar.user))
        if self._peerAddress is not None and cleartextOverNetwork(self.transport, self._peerAddress):
            self._audit(
                LogLevel.warn,
                "files: {user} logged in from {peer} over plain TCP: the password crossed the network "
                "in clear text; serve --files on a TLS endpoint (ssl:/tls:, see docs/deploy.md)",
                user=loggable(avatar.user),
            )
        self.reply(wire.LOGGED_IN)

    def _loginFailed(self, failure: Failure, user: str) -> Deferred[None]:
        """
        Every failure to check a password is a failed login: delayed, counted
        here and per address.  A checker that broke (rather than said no) is
        logged, but the client learns no more than from a wrong password, so
        a broken check can never be used to guess fast or to tell names apart.
        """
        if not failure.check(UnauthorizedLogin):
            self._log.failure(
                "files: checking the password of {user} from {peer} failed", failure, peer=self._peer, user=loggable(user),
            )
        error = self._login.failed(self._peerKey)
        self._event(
            LogLevel.info, "files: {peer} failed to log in as {user} ({failures} on this connection)",
            user=loggable(user), failures=self._login.failures,
        )
        return self._login.answerLater(error)
