"""
The telnet-friendly file protocol: one session class put together from its
layers, and the factory that holds what the sessions share.

  - L{echofile.session}: the life cycle (admission, greeting, framing,
    timers, half-close, ending) and, in L{echofile.holds}, input holds and
    the event outbox;
  - L{echofile.commands}: dispatch to ``cmd_<NAME>`` and the one error mapping;
  - L{echofile.login}, L{echofile.filecommands}, L{echofile.chatcommands}:
    the commands, next to what they drive.

Every reply text is defined in L{echofile.wire}.  File access is the
avatar's job (L{echofile.share}), password checks the portal's
(L{echofile.auth}).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from zope.interface import implementer

from echofile import wire
from echofile.addresses import LOOPBACK, Network
from echofile.admission import AdmissionPolicy
from echofile.chat import IChat, IChatListener
from echofile.chatcommands import ChatCommands
from echofile.eventlog import SESSION_LOG_LIMIT, LogBudgets
from echofile.filecommands import FileCommands
from echofile.hashing import FileHasher
from echofile.holds import HELD_INPUT
from echofile.limits import ConnectionLimiter
from echofile.lockout import LoginPenalties
from echofile.login import MAX_AUTH_FAILURES, LoginCommands
from echofile.session import State
from echofile.shutdown import SessionTracker
from echofile.wire import CommandError

GREETING = wire.GREETING
HELP = wire.HELP
BUSY = wire.BUSY
CHAT_UNAVAILABLE = wire.CHAT_UNAVAILABLE

__all__ = [
    "BUSY", "CHAT_UNAVAILABLE", "CommandError", "FileSession", "FilesFactory", "GREETING", "HELD_INPUT", "HELP",
    "MAX_AUTH_FAILURES", "State",
]


@implementer(IChatListener)
class FileSession(LoginCommands, FileCommands, ChatCommands):
    """
    One client session of the file protocol: the commands of its layers
    (USER/AUTH, FILE/RESUME/HASH/LIST, SAY/MSG/WHO/NICK, HELP/QUIT) over the
    life cycle of L{echofile.session.LineSession}.
    """


def _deferToReactorThreads(function: Callable[[], Any]) -> Deferred[Any]:
    """The reactor's thread pool (imported late: tests build factories on a Clock)."""
    from twisted.internet.threads import deferToThread

    return deferToThread(function)


class FilesFactory(ServerFactory):
    """
    Shared configuration of the file service's sessions.

    @param portal: where AUTH logs in.
    @param clock: every timer of the sessions runs on it.
    @param chat: the one chat service, the same the portal's realm puts
        sessions in (presence and delivery must be one object, or WHO and
        MSG would not see who logged in).
    @param authFailureDelay: seconds before a failed AUTH is answered.
    @param loginTimeout: seconds from connecting to logging in (the TLS
        handshake and the PROXY header included); None: no deadline, and
        C{idleTimeout} bounds the wait for the handshake and the header.
    @param trustedProxies: the socket peers whose PROXY headers are believed.
    @param hashes: the server-wide SHA-256 service of HASH (cap, queue, cache).
    @param logBudget: log lines one client address may cause per window (--log-budget).
    """

    noisy = False  # no "Starting factory <... at 0x...>" at info; the port logs where it listens

    def __init__(
        self,
        portal: Portal,
        clock: IReactorTime,
        limiter: ConnectionLimiter,
        chat: IChat,
        idleTimeout: float | None = 300.0,
        maxLine: int = 4096,
        authFailureDelay: float = 1.0,
        loginTimeout: float | None = 60.0,
        penalties: LoginPenalties | None = None,
        trustedProxies: Iterable[Network] = LOOPBACK,
        hashes: FileHasher | None = None,
        logBudget: int = SESSION_LOG_LIMIT,
    ) -> None:
        self.portal = portal
        self.clock = clock
        self.limiter = limiter
        realmChat = getattr(portal.realm, "chat", chat)
        if realmChat is not chat:
            raise ValueError("the files factory and the portal's realm must share one chat service")
        self.chat = chat
        self.idleTimeout = idleTimeout
        self.maxLine = maxLine
        self.authFailureDelay = authFailureDelay
        self.loginTimeout = loginTimeout
        self.penalties = penalties
        self.admission = AdmissionPolicy(
            clock, limiter, loginTimeout if loginTimeout is not None else idleTimeout, trustedProxies,
        )
        self.hashes = hashes if hashes is not None else FileHasher(_deferToReactorThreads)
        self.sessions = SessionTracker()
        #: The log budgets of the client addresses, shared by their sessions.
        self.logBudgets = LogBudgets(FileSession._log, clock, limit=logBudget)

    def stopFactory(self) -> None:
        """The listener is gone: the suppressed counts not reported yet are reported now."""
        self.logBudgets.close()

    def buildProtocol(self, addr: IAddress) -> Protocol:
        session = FileSession(self)
        self.sessions.add(session)
        return session
