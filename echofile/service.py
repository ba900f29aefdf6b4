"""
The state the sessions share, as one service (like the mailbox server's):
L{FilesService} owns the chat, the login penalties, the SHA-256 service,
the served tree, the connection caps, the session trackers and the drain
on SIGTERM, starts and stops them with the application, and builds the
factories that get them.  Nothing is wired twice: the portal's realm and
the files factory get the one chat object from here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.application.service import IService, MultiService
from twisted.cred.checkers import ICredentialsChecker

from echofile.addresses import LOOPBACK, Network
from echofile.auth import makePortal
from echofile.chat import IChat
from echofile.echo import EchoFactory
from echofile.eventlog import SESSION_LOG_LIMIT
from echofile.files import FilesFactory
from echofile.gcpolicy import freezeStartupHeap
from echofile.hashing import FileHasher
from echofile.limits import ConnectionLimiter
from echofile.lockout import LoginPenalties
from echofile.share import Tree
from echofile.shutdown import GracefulShutdown


class FilesService(MultiService):
    """
    Shared state of one server instance.

    @ivar echo: the echo factory (its sessions drained with the files').
    @ivar files: the files factory.
    @ivar shutdown: the drain on SIGTERM (its C{draining} feeds the status page).
    """

    def __init__(
        self,
        reactor: Any,
        chat: IChat,
        penalties: LoginPenalties,
        hashes: FileHasher,
        tree: Tree,
        maxConnections: int,
        maxPerAddress: int,
        drainTimeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.chat = chat
        self.penalties = penalties
        self.hashes = hashes
        self.tree = tree
        self.echoLimiter = ConnectionLimiter(maxConnections, maxPerAddress, "echo")
        self.filesLimiter = ConnectionLimiter(maxConnections, maxPerAddress, "files")
        for child in (penalties, chat, hashes):
            if IService.providedBy(child):
                child.setServiceParent(self)
        self._drainTimeout = drainTimeout
        self.echo: EchoFactory | None = None
        self.files: FilesFactory | None = None
        self.shutdown: GracefulShutdown | None = None

    def startService(self) -> None:
        super().startService()
        # Once the reactor runs (its signal handlers are in: a full collection here, before them, would
        # widen the window in which SIGTERM kills twistd without a clean shutdown), what exists then lives
        # as long as the process (echofile.gcpolicy).
        self.reactor.callWhenRunning(freezeStartupHeap)

    def makeEchoFactory(
        self, idleTimeout: float | None, readyTimeout: float | None, trustedProxies: Iterable[Network] = LOOPBACK,
        logBudget: int = SESSION_LOG_LIMIT,
    ) -> EchoFactory:
        self.echo = EchoFactory(self.reactor, self.echoLimiter, idleTimeout, readyTimeout, trustedProxies, logBudget)
        return self.echo

    def makeFilesFactory(
        self,
        guestPassword: str | None,
        checkers: list[ICredentialsChecker],
        trustedProxies: Iterable[Network] = LOOPBACK,
        **options: Any,
    ) -> FilesFactory:
        """The files factory, on a portal whose realm shares this service's chat."""
        portal = makePortal(self.tree, guestPassword, checkers, self.chat)
        self.files = FilesFactory(
            portal, self.reactor, self.filesLimiter, self.chat,
            penalties=self.penalties, trustedProxies=trustedProxies, hashes=self.hashes, **options,
        )
        return self.files

    def makeDrain(self, callFromThread: Callable[..., Any] | None = None) -> GracefulShutdown:
        """The drain of both factories' sessions; made after them, started and stopped with this service."""
        trackers = [factory.sessions for factory in (self.echo, self.files) if factory is not None]
        self.shutdown = GracefulShutdown(trackers, self.reactor, self._drainTimeout, callFromThread=callFromThread)
        self.shutdown.setServiceParent(self)
        return self.shutdown
