"""
A cred checker for bcrypt password files in Apache ``htpasswd -B`` format,
and the strcred plugin that makes it ``--auth htpasswd:/path/to/file``.

    $ htpasswd -cB /etc/echofile.htpasswd alice

Every check (reading the file when it changed, and bcrypt itself, which is
deliberately slow) runs in the reactor's thread pool, so one login never
stalls the other sessions.  Lines whose hash is not bcrypt (``$2a$``,
``$2b$``, ``$2y$``) are ignored with a warning: MD5, SHA-1 and crypt hashes
are too cheap to guess.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from echofile.auth import asBytes

_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")


def bcryptCost(hashed: bytes) -> int | None:
    """The cost (log2 rounds) of a bcrypt hash such as ``$2y$05$...``."""
    try:
        return int(hashed.split(b"$")[2])
    except (IndexError, ValueError):
        return None


def dummyHashFor(users: dict[bytes, bytes]) -> bytes:
    """
    A hash to check unknown user names against, as costly as the file's
    most costly one: an unknown name must take as long to refuse as a known
    one, or the delay would tell which accounts exist.
    """
    costs = [cost for cost in map(bcryptCost, users.values()) if cost is not None]
    rounds = min(max(costs, default=12), 31)
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=max(rounds, 4)))


def parseHtpasswd(lines: Iterable[bytes]) -> tuple[dict[bytes, bytes], list[bytes]]:
    """Users and bcrypt hashes of htpasswd lines, plus the names whose hash is unusable."""
    users: dict[bytes, bytes] = {}
    skipped: list[bytes] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(b"#") or b":" not in line:
            continue
        name, _, hashed = line.partition(b":")
        if hashed.startswith(_BCRYPT_PREFIXES):
            users[name] = hashed
        else:
            skipped.append(name)
    return users, skipped


def readHtpasswd(path: str) -> tuple[dict[bytes, bytes], list[bytes]]:
    """L{parseHtpasswd} over a file, line by line."""
    with open(path, "rb") as f:
        return parseHtpasswd(f)


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """
    Checks user names and passwords against an htpasswd file of bcrypt hashes.

    The file is read again whenever its modification time or size changes,
    so accounts can be added with ``htpasswd -B`` while the server runs.
    """

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(self, path: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.path = path
        self._reactor = reactor
        self._lock = threading.Lock()
        self._signature: tuple[int, int] | None = None
        self._users: dict[bytes, bytes] = {}
        self._dummyHash = b""

    def _currentUsers(self) -> dict[bytes, bytes]:
        """The parsed file, re-read if it changed (runs in a worker thread)."""
        with self._lock:
            info = os.stat(self.path)
            signature = (info.st_mtime_ns, info.st_size)
            if signature != self._signature:
                users, skipped = readHtpasswd(self.path)
                if skipped:
                    self._log.warn(
                        "htpasswd {path}: ignoring {count} accounts without a bcrypt hash (use htpasswd -B)",
                        path=self.path, count=len(skipped),
                    )
                self._users, self._signature = users, signature
                self._dummyHash = dummyHashFor(users)
            return self._users

    def _check(self, username: bytes, password: bytes) -> bool:
        hashed = self._currentUsers().get(username)
        if hashed is None:
            bcrypt.checkpw(password, self._dummyHash)
            return False
        try:
            return bcrypt.checkpw(password, hashed)
        except ValueError:  # a malformed hash
            return False

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes]:
        username = asBytes(credentials.username)
        password = asBytes(credentials.password)
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._check, username, password)

        def decide(ok: bool) -> bytes:
            if not ok:
                raise UnauthorizedLogin()
            return username

        return d.addCallback(decide)


@implementer(ICheckerFactory, IPlugin)
class HtpasswdCheckerFactory:
    """``--auth htpasswd:PATH`` for every twistd plugin that takes ``--auth``."""

    authType = "htpasswd"
    authHelp = (
        "An Apache htpasswd file of bcrypt hashes (made with `htpasswd -B`). "
        "Checks run in a thread; the file is re-read when it changes."
    )
    argStringFormat = "The path of the htpasswd file."
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring: str) -> HtpasswdChecker:
        if not argstring.strip():
            raise ValueError("htpasswd needs the path of a file: --auth htpasswd:/path/to/file")
        if not os.path.isfile(argstring):
            raise ValueError(f"htpasswd file not found: {argstring}")
        users, _ = readHtpasswd(argstring)
        if not users:
            raise ValueError(f"htpasswd file {argstring} has no bcrypt accounts (use htpasswd -B)")
        return HtpasswdChecker(argstring)


checkerFactory = HtpasswdCheckerFactory()
