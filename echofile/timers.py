"""
Session timers: a session's idle timeout and login deadline on one
queued call (L{SessionTimer}); many sessions' calls behind one reactor
DelayedCall (L{TimerQueue}); and cancelling a pending call (L{cancelPending}).
"""

from __future__ import annotations

import heapq
from itertools import count
from typing import Callable, Protocol
from weakref import WeakKeyDictionary

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class PendingCall(Protocol):
    """What a session asks of a scheduled call: a C{DelayedCall}, or a L{QueuedCall}."""

    def active(self) -> bool: ...

    def getTime(self) -> float: ...

    def cancel(self) -> None: ...


def cancelPending(call: PendingCall | IDelayedCall | None) -> None:
    """Cancel C{call} unless it is None, has already run, or was cancelled."""
    if call is not None and call.active():
        call.cancel()


class QueuedCall:
    """One call in a L{TimerQueue}: C{active}, C{getTime} and C{cancel} as a C{DelayedCall}'s."""

    __slots__ = ("_queue", "_time", "_func", "_state")

    _PENDING, _CALLED, _CANCELLED = 0, 1, 2

    def __init__(self, queue: "TimerQueue", time: float, func: Callable[[], object]) -> None:
        self._queue = queue
        self._time = time
        self._func = func
        self._state = self._PENDING

    def getTime(self) -> float:
        return self._time

    def active(self) -> bool:
        return self._state == self._PENDING

    def cancel(self) -> None:
        if self._state == self._CANCELLED:
            raise AlreadyCancelled()
        if self._state == self._CALLED:
            raise AlreadyCalled()
        self._state = self._CANCELLED
        self._func = None  # type: ignore[assignment]  # let go of the session now
        self._queue._cancelled()

    def _run(self) -> bool:
        """Called by the queue when due; False if it was cancelled meanwhile."""
        if self._state != self._PENDING:
            return False
        self._state = self._CALLED
        func, self._func = self._func, None  # type: ignore[assignment]
        func()
        return True


class TimerQueue:
    """
    Every session's timer on one clock, behind one reactor C{DelayedCall}
    (for the soonest).

    Twisted's reactor keeps its timers in a heap of C{DelayedCall}s ordered
    by a Python C{__lt__}: with 10,000 idle sessions, inserting one new
    session's idle timer made about 13 Python calls, and its C{DelayedCall}
    is a large object per session.  Here the heap holds C{(time, sequence,
    call)} tuples, compared in C, and calls due at the same time run in the
    order they were made.  A cancelled call stays in the heap until it comes
    to the top (or the heap is compacted, once most of it is cancelled);
    the reactor's call is cancelled once nothing is pending.
    """

    _log = Logger()

    #: Compact the heap once it holds more cancelled calls than this and than pending ones.
    COMPACT_AT = 64

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, QueuedCall]] = []
        self._sequence = count()
        self._pending = 0
        self._call: IDelayedCall | None = None  # the reactor's, for the soonest call
        self._callTime = 0.0

    def __len__(self) -> int:
        """Calls still pending."""
        return self._pending

    def callLater(self, delay: float, func: Callable[[], object]) -> QueuedCall:
        """C{func()} in C{delay} seconds, as C{clock.callLater(delay, func)} would."""
        when = self._clock.seconds() + delay
        call = QueuedCall(self, when, func)
        heapq.heappush(self._heap, (when, next(self._sequence), call))
        self._pending += 1
        if self._call is None or when < self._callTime:
            self._schedule()
        return call

    def _cancelled(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._heap.clear()
            self._schedule()
        elif len(self._heap) - self._pending > max(self.COMPACT_AT, self._pending):
            self._heap = [entry for entry in self._heap if entry[2].active()]
            heapq.heapify(self._heap)

    def _schedule(self) -> None:
        """The reactor's call at the soonest pending call's time (none if nothing is pending)."""
        heap = self._heap
        while heap and not heap[0][2].active():
            heapq.heappop(heap)
        call = self._call
        if not heap:
            self._call = None
            if call is not None and call.active():
                call.cancel()
            return
        when = heap[0][0]
        if call is not None and call.active():
            if call.getTime() <= when:
                return  # it wakes us first (for a call since cancelled): we schedule again then
            call.cancel()  # moving a DelayedCall sooner is a linear search of the reactor's heap
        self._callTime = when
        self._call = self._clock.callLater(max(0.0, when - self._clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        heap, due = self._heap, []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        # Calls made by these run from the reactor's next timer, as with callLater.
        for call in due:
            try:
                ran = call._run()
            except Exception:
                ran = True
                self._log.failure("Unhandled error in a session timer")
            if ran:
                self._pending -= 1
        self._schedule()


_queues: "WeakKeyDictionary[IReactorTime, TimerQueue]" = WeakKeyDictionary()


def timerQueue(clock: IReactorTime) -> TimerQueue:
    """The one L{TimerQueue} of C{clock} (made on first use)."""
    queue = _queues.get(clock)
    if queue is None:
        queue = _queues[clock] = TimerQueue(clock)
    return queue


def _stopped() -> None:
    """A stopped timer's idle callback: never called (its idle timeout is gone)."""


class SessionTimer:
    """
    A session's idle timeout and an optional fixed deadline (the login
    deadline), on one call of its clock's L{TimerQueue}, scheduled again
    only when it fires.

    Activity is a timestamp (L{touch}), not a rescheduled call per
    message or line: cheaper on the hot path, and one timer instead of two
    per session keeps idle sessions small.

    @param onIdle: called once no activity was seen for C{idleTimeout}.
    """

    __slots__ = ("_clock", "_queue", "_idleTimeout", "_onIdle", "_last", "_deadline", "_onDeadline", "_call")

    def __init__(self, clock: IReactorTime, idleTimeout: float | None, onIdle: Callable[[], None]) -> None:
        self._clock = clock
        self._queue = timerQueue(clock)
        self._idleTimeout = idleTimeout
        self._onIdle = onIdle
        self._last = 0.0
        self._deadline: float | None = None
        self._onDeadline: Callable[[], None] | None = None
        self._call: QueuedCall | None = None

    def start(self, deadline: float | None = None, onDeadline: Callable[[], None] | None = None) -> None:
        """
        Begin counting idle time from now, and with C{deadline} (seconds from
        now) also the fixed deadline: one C{callLater} for both, where
        L{start} then L{setDeadline} would schedule the idle call and then
        cancel it for the sooner deadline (a second call per session, and a
        cancelled one left in the queue's heap).
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
        """
        No more calls, and the callbacks let go of: C{onIdle} is a bound
        method of the session that owns this timer, a reference cycle that
        would leave every closed session (its transport, address, admission)
        for the garbage collector to find instead of being freed at once.
        """
        self.clearDeadline()
        self._idleTimeout = None
        self._onIdle = _stopped
        call, self._call = self._call, None
        cancelPending(call)

    def _due(self) -> float | None:
        idle = None if self._idleTimeout is None else self._last + self._idleTimeout
        deadline = self._deadline
        if deadline is None or (idle is not None and idle < deadline):
            return idle
        return deadline

    def _schedule(self) -> None:
        due = self._due()
        if due is None:
            return
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= due:
                return  # it fires first and schedules again from there
            # Sooner: a queued call is never moved; cancelling it only marks it.
            call.cancel()
        self._call = self._queue.callLater(max(0.0, due - self._clock.seconds()), self._fire)

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
