"""
Accounts: the realm that hands out L{Share} avatars, and the checker that
decides which (user, password) pairs are accepted.

"Where is the password checked" has one answer: L{AccountsChecker}.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Callable, Iterable, Mapping

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile import metrics
from echofile.chat import IChat, IChatListener
from echofile.share import IShare, Share, Tree

#: The account that ``AUTH <password>`` without ``USER`` logs in to.
DEFAULT_USER = "guest"
PASSWORD_ENVIRONMENT_VARIABLE = "ECHOFILE_PASSWORD"


def isGuest(account: str) -> bool:
    """
    Whether sessions of C{account} are guests: everyone on the shared
    default account is a different person, so each such session chats under
    its own C{~} name instead of the account's.
    """
    return account == DEFAULT_USER


def defaultPassword(environ: Mapping[str, str]) -> tuple[str, bool]:
    """
    The default account's password and whether it was generated.

    Taken from C{ECHOFILE_PASSWORD}; when that is unset or empty a random one
    is made, so no installation ever has a well-known password.
    """
    password = environ.get(PASSWORD_ENVIRONMENT_VARIABLE, "")
    if password.strip():
        return password, False
    return secrets.token_urlsafe(12), True


def asBytes(value: str | bytes) -> bytes:
    """Credentials as bytes: strcred checkers hand out str or bytes depending on the type."""
    return value.encode("utf-8") if isinstance(value, str) else value


@implementer(IUsernamePassword)
class Credentials:
    """
    A user name and password, as bytes.

    strcred's ``memory:`` checker stores str and its ``file:`` checker bytes;
    credentials are bytes here and L{normalizeChecker} brings the in-memory
    database to bytes too.  The comparison is constant-time.
    """

    def __init__(self, username: str, password: str) -> None:
        self.username = asBytes(username)
        self.password = asBytes(password)

    def checkPassword(self, password: str | bytes) -> bool:
        return hmac.compare_digest(asBytes(password), self.password)


def normalizeChecker(checker: ICredentialsChecker) -> ICredentialsChecker:
    """Make a strcred checker work with bytes L{Credentials}."""
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        converted = InMemoryUsernamePasswordDatabaseDontUse()
        for name, password in checker.users.items():
            converted.addUser(asBytes(name), asBytes(password))
        return converted
    return checker


@implementer(ICredentialsChecker)
class AccountsChecker:
    """
    The default account plus whatever C{--auth} configured.

    The name L{DEFAULT_USER} always means the default account (an C{--auth}
    entry of the same name is never consulted); every other name is tried
    against the configured checkers in order, and the first to accept wins.
    With C{defaultPassword} None (C{--no-guest}) the default account is
    off: its name is refused like any wrong password.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, defaultPassword: str | None, others: Iterable[ICredentialsChecker] = ()) -> None:
        self._defaultPassword = defaultPassword
        self._others = [
            normalizeChecker(checker)
            for checker in others
            if IUsernamePassword in getattr(checker, "credentialInterfaces", ())
        ]

    @inlineCallbacks
    def requestAvatarId(self, credentials: IUsernamePassword) -> Any:
        username = asBytes(credentials.username)
        if username == DEFAULT_USER.encode("ascii"):
            if self._defaultPassword is not None and credentials.checkPassword(self._defaultPassword):
                return DEFAULT_USER
            raise UnauthorizedLogin()
        for checker in self._others:
            try:
                avatarId = yield maybeDeferred(checker.requestAvatarId, credentials)
            except UnauthorizedLogin:
                continue
            return avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        raise UnauthorizedLogin()


@implementer(IRealm)
class ShareRealm:
    """
    Every account gets the same served folder, tagged with its name.

    The realm also keeps presence: the session logging in is the I{mind},
    it joins the chat service here (a guest session gets its own chat name)
    and leaves it when the session logs out.
    """

    def __init__(self, root: str | Tree, chat: IChat | None = None) -> None:
        self.tree = root if isinstance(root, Tree) else Tree(root)
        self.root = self.tree.path
        self.chat = chat

    def requestAvatar(
        self, avatarId: str | bytes, mind: IChatListener | None, *interfaces: Any
    ) -> "Deferred[tuple[Any, Share, Callable[[], None]]] | tuple[Any, Share, Callable[[], None]]":
        if IShare not in interfaces:
            raise NotImplementedError("echofile only provides IShare avatars")
        user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        share = Share(self.tree, user)
        chat = self.chat
        if chat is None or mind is None:
            return IShare, share, lambda: None
        # A networked chat may answer later: the login completes once the session is in presence.
        joined = maybeDeferred(chat.join, mind, user, isGuest(user))
        return joined.addCallback(lambda _: (IShare, share, lambda: chat.leave(mind)))


def makePortal(
    root: str | Tree, defaultPassword: str | None, checkers: Iterable[ICredentialsChecker] = (), chat: IChat | None = None
) -> Portal:
    """The portal the file service logs sessions in through (C{defaultPassword} None: no guest)."""
    return Portal(ShareRealm(root, chat), [AccountsChecker(defaultPassword, checkers)])


def login(
    portal: Portal, username: str, password: str, session: IChatListener | None = None
) -> "Deferred[tuple[Any, Share, Callable[[], None]]]":
    """
    Log C{session} in through C{portal}; fails with L{UnauthorizedLogin} on
    bad credentials.  Every attempt is counted (C{echofile_logins_total}).
    """
    d = portal.login(Credentials(username, password), session, IShare)
    return d.addBoth(countLogin)


def countLogin(result: Any) -> Any:
    """Count a login's outcome (a callback and errback: passes C{result} on)."""
    if not isinstance(result, Failure):
        outcome = "success"
    elif result.check(UnauthorizedLogin):
        outcome = "failure"
    else:
        outcome = "error"
    metrics.LOGINS.labels(result=outcome).inc()
    return result


def countLockedOut() -> None:
    """An AUTH refused without a check: its address is locked out."""
    metrics.LOGINS.labels(result="locked_out").inc()
