"""
Session timers: a session's idle timeout and login deadline on one
DelayedCall (L{SessionTimer}), and cancelling a pending call (L{cancelPending}).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


def cancelPending(call: IDelayedCall | None) -> None:
    """Cancel C{call} unless it is None, has already run, or was cancelled."""
    if call is not None and call.active():
        call.cancel()


class SessionTimer:
    """
    A session's idle timeout and an optional fixed deadline (the login
    deadline), on one DelayedCall that is moved only when it fires.

    Activity is a timestamp (L{touch}), not a C{DelayedCall.reset} per
    message or line: cheaper on the hot path, and one timer instead of two
    per session keeps idle sessions small.

    @param onIdle: called once no activity was seen for C{idleTimeout}.
    """

    __slots__ = ("_clock", "_idleTimeout", "_onIdle", "_last", "_deadline", "_onDeadline", "_call")

    def __init__(self, clock: IReactorTime, idleTimeout: float | None, onIdle: Callable[[], None]) -> None:
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._onIdle = onIdle
        self._last = 0.0
        self._deadline: float | None = None
        self._onDeadline: Callable[[], None] | None = None
        self._call: IDelayedCall | None = None

    def start(self, deadline: float | None = None, onDeadline: Callable[[], None] | None = None) -> None:
        """
        Begin counting idle time from now, and with C{deadline} (seconds from
        now) also the fixed deadline: one C{callLater} for both, where
        L{start} then L{setDeadline} would schedule the idle call and then
        cancel it for the sooner deadline (a second DelayedCall per session,
        and a cancelled one left in the reactor's heap).
        """
        self._last = self._clock.seconds()
        if deadline is not None:
            self._deadline = self._last + deadline
            self._onDeadline = onDeadline
        self._schedule()

    def touch(self) -> None:
        """Something happened: the idle time starts again."""
        self._last = self._clock.seconds()

    def setDeadline(self, seconds: float, onDeadline: Callable[[], None]) -> None:
        """Call C{onDeadline} C{seconds} from now unless L{clearDeadline} comes first."""
        self._deadline = self._clock.seconds() + seconds
        self._onDeadline = onDeadline
        self._schedule()

    def clearDeadline(self) -> None:
        self._deadline = self._onDeadline = None

    def stop(self) -> None:
        self.clearDeadline()
        self._idleTimeout = None
        call, self._call = self._call, None
        cancelPending(call)

    def _due(self) -> float | None:
        times = [t for t in (self._deadline, None if self._idleTimeout is None else self._last + self._idleTimeout) if t is not None]
        return min(times) if times else None

    def _schedule(self) -> None:
        due = self._due()
        if due is None:
            return
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= due:
                return  # it fires first and schedules again from there
            # Moving a DelayedCall sooner is a linear search of the reactor's
            # heap; cancelling is cheap.
            call.cancel()
        self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        if self._deadline is not None and now >= self._deadline:
            onDeadline = self._onDeadline
            self.clearDeadline()
            assert onDeadline is not None
            onDeadline()
        elif self._idleTimeout is not None and now - self._last >= self._idleTimeout:
            self._idleTimeout = None
            self._onIdle()
            return
        self._schedule()
