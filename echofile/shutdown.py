"""
Graceful shutdown: on SIGTERM, stop listening at once, let transfers in
flight finish for a while, tell idle sessions goodbye, then cut the rest.

The listening services stop by themselves when the application stops; this
service, stopped at the same moment, drains the open sessions.  The
application's stop waits for the Deferred it returns, so the process exits
once every session is gone or the drain timeout has passed, whichever comes
first.  A second SIGTERM or SIGINT meanwhile cuts everything at once.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Iterable, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from echofile.limits import cancelPending
from echofile.waiters import Waiters


class Drainable(Protocol):
    """A session that can be asked to end."""

    def shutdown(self) -> None:
        """End as soon as it can without breaking a reply or a body."""

    def abort(self) -> None:
        """End now."""


class SessionTracker:
    """The live sessions of one factory, and who waits for them to be gone."""

    def __init__(self) -> None:
        self.sessions: set[Drainable] = set()
        self._waiters: Waiters[None] = Waiters()

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, session: Drainable) -> None:
        self.sessions.add(session)

    def discard(self, session: Drainable) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._waiters.fire(None)

    def whenEmpty(self) -> Deferred[None]:
        return self._waiters.wait() if self.sessions else succeed(None)


class GracefulShutdown(Service):
    """
    @param trackers: the sessions to drain (one tracker per factory).
    @param drainTimeout: seconds before the remaining sessions are aborted.
    @param installSignalHandlers: whether a second SIGTERM/SIGINT aborts at
        once (off in tests that have no real signals).
    """

    _log = Logger()

    def __init__(
        self,
        trackers: Iterable[SessionTracker],
        clock: IReactorTime,
        drainTimeout: float,
        installSignalHandlers: bool = True,
        callFromThread: Callable[..., Any] | None = None,
    ) -> None:
        self._trackers = list(trackers)
        self._clock = clock
        self.drainTimeout = drainTimeout
        self._installSignalHandlers = installSignalHandlers
        self._callFromThread = callFromThread
        #: True once a shutdown began (``/healthz`` then answers 503).
        self.draining = False
        self._drained = False
        self._drainWaiters: Waiters[None] = Waiters()

    def whenDrained(self) -> Deferred[None]:
        """
        Fires once a shutdown's drain is over (every session gone, or cut):
        what must outlive the drain (the ``/healthz`` listener) stops then.
        """
        return succeed(None) if self._drained else self._drainWaiters.wait()

    def _sessions(self) -> list[Drainable]:
        return [session for tracker in self._trackers for session in list(tracker.sessions)]

    def stopService(self) -> Deferred[object]:
        super().stopService()
        self.draining = True
        sessions = self._sessions()
        self._log.info(
            "Shutting down: draining {count} sessions (at most {timeout}s)",
            count=len(sessions), timeout=self.drainTimeout,
        )
        for session in sessions:
            session.shutdown()
        deadline = self._clock.callLater(self.drainTimeout, self.abortAll, "drain timeout")
        restore = self._catchSecondSignal()
        drained = DeferredList([tracker.whenEmpty() for tracker in self._trackers])

        def finished(result: object) -> object:
            cancelPending(deadline)
            restore()
            self._log.info("All sessions closed")
            self._drained = True
            self._drainWaiters.fire(None)
            return result

        return drained.addBoth(finished)

    def abortAll(self, why: str) -> None:
        sessions = self._sessions()
        if sessions:
            self._log.warn("Aborting {count} sessions: {why}", count=len(sessions), why=why)
        for session in sessions:
            session.abort()

    def _catchSecondSignal(self) -> Callable[[], None]:
        if not self._installSignalHandlers or self._callFromThread is None:
            return lambda: None
        callFromThread = self._callFromThread
        previous = {}

        def handler(signum: int, frame: object) -> None:
            callFromThread(self.abortAll, "second signal")

        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread
                pass

        def restore() -> None:
            for signum, old in previous.items():
                signal.signal(signum, old)

        return restore
