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

#: bcrypt only ever uses this many bytes of a password (Apache, and bcrypt < 5, cut there silently).
BCRYPT_MAX_PASSWORD = 72

#: The most costly dummy hash made for unknown names: Apache's ``htpasswd -C``
#: goes up to 17, so every file the tool writes is matched exactly; a costlier
#: (hand-made) line must not make each unknown-name guess hold a worker thread
#: for hours (cost 31 is 2**18 times cost 13).
MAX_DUMMY_COST = 17
#: The cost of ``htpasswd -B`` without ``-C``, for a file without bcrypt lines.
DEFAULT_DUMMY_COST = 5


def bcryptCost(hashed: bytes) -> int | None:
    """The cost (log2 rounds) of a bcrypt hash such as ``$2y$05$...``."""
    try:
        return int(hashed.split(b"$")[2])
    except (IndexError, ValueError):
        return None


def dummyCostFor(users: dict[bytes, bytes]) -> int:
    """
    The cost of the hash unknown names are checked against: the file's
    highest, so that an unknown name takes as long to refuse as a known one
    (or the delay would tell which accounts exist), within 4..L{MAX_DUMMY_COST}.
    """
    costs = [cost for cost in map(bcryptCost, users.values()) if cost is not None]
    return max(4, min(max(costs, default=DEFAULT_DUMMY_COST), MAX_DUMMY_COST))


def makeDummyHash(cost: int) -> bytes:
    """A bcrypt hash of that cost that no password is known to match (CPU-heavy: call it in a thread)."""
    return bcrypt.hashpw(os.urandom(16).hex().encode("ascii"), bcrypt.gensalt(rounds=cost))


def checkPassword(password: bytes, hashed: bytes) -> bool:
    """
    Whether C{password} matches the bcrypt hash C{hashed}, as Apache decides:
    only the first 72 bytes count (bcrypt 5 raises for longer ones instead).
    A malformed hash matches nothing.
    """
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        return False


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
    so accounts can be added with ``htpasswd -B`` while the server runs.  If
    it cannot be read then, the accounts read last stay in use (and that is
    logged once, not on every login).
    """

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(self, path: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.path = path
        self._reactor = reactor
        #: Guards the file's accounts and signature (never held during bcrypt).
        self._lock = threading.Lock()
        self._signature: tuple[int, int] | None = None
        self._users: dict[bytes, bytes] = {}
        self._readError: str | None = None
        #: (cost, hash) for unknown names; replaced only when the file's highest cost changes.
        self._dummy: tuple[int, bytes] | None = None

    @property
    def _dummyHash(self) -> bytes:
        return self._dummy[1] if self._dummy is not None else b""

    def _currentUsers(self) -> dict[bytes, bytes]:
        """The parsed file, re-read if it changed (runs in a worker thread)."""
        with self._lock:
            try:
                self._readIfChanged()
            except OSError as e:
                self._cannotRead(e)
            else:
                if self._readError is not None:
                    self._readError = None
                    self._log.info("htpasswd {path}: readable again", path=self.path)
            return self._users

    def load(self) -> dict[bytes, bytes]:
        """
        Read the file now (at start-up, before the reactor runs), raising
        OSError if it cannot be: these are the accounts kept if it becomes
        unreadable before the first login.
        """
        with self._lock:
            self._readIfChanged()
            return self._users

    def _readIfChanged(self) -> None:
        """Parse the file if its signature changed (the lock held); OSError if it cannot be read."""
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

    def _cannotRead(self, error: OSError) -> None:
        """Keep the accounts read last; say so when the problem starts, not on every login."""
        reason = error.strerror or str(error)
        if reason != self._readError:
            self._readError = reason
            self._log.error(
                "htpasswd {path}: cannot read it ({reason}); keeping the {count} accounts read before",
                path=self.path, reason=reason, count=len(self._users),
            )

    def _dummyFor(self, users: dict[bytes, bytes]) -> bytes:
        """The dummy hash for the file's current highest cost, made again only when that changes."""
        cost = dummyCostFor(users)
        dummy = self._dummy
        if dummy is None or dummy[0] != cost:
            dummy = (cost, makeDummyHash(cost))  # no lock held: other checks go on meanwhile
            self._dummy = dummy
        return dummy[1]

    def _check(self, username: bytes, password: bytes) -> bool:
        """Runs in a worker thread: bcrypt is slow on purpose."""
        users = self._currentUsers()
        hashed = users.get(username)
        if hashed is None:
            checkPassword(password, self._dummyFor(users))
            return False
        return checkPassword(password, hashed)

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
        if not os.path.exists(argstring):
            raise ValueError(f"htpasswd file not found: {argstring}")
        if not os.path.isfile(argstring):
            raise ValueError(f"htpasswd file is not a regular file: {argstring}")
        checker = HtpasswdChecker(argstring)
        try:
            users = checker.load()
        except OSError as e:
            raise ValueError(f"cannot read htpasswd file {argstring}: {e.strerror or e}") from None
        if not users:
            raise ValueError(f"htpasswd file {argstring} has no bcrypt accounts (use htpasswd -B)")
        return checker


checkerFactory = HtpasswdCheckerFactory()
