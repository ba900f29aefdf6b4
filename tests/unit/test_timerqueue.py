"""TimerQueue: every session's timer on one clock behind one reactor DelayedCall."""

from __future__ import annotations

import pytest
from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from echofile.limits import SessionTimer
from echofile.timers import TimerQueue, timerQueue


def test_many_sessions_timers_are_one_reactor_call():
    """
    10,000 idle sessions used to be 10,000 DelayedCalls in the reactor's
    heap, each insert a dozen Python comparisons; they are one call now, for
    the soonest, and each still fires at its own time.
    """
    clock = Clock()
    fired: list[int] = []
    timers = []
    for i in range(1000):
        timer = SessionTimer(clock, 10.0 + i / 100, lambda i=i: fired.append(i))
        timer.start()
        timers.append(timer)
    assert len(clock.getDelayedCalls()) == 1
    assert clock.getDelayedCalls()[0].getTime() == 10.0
    clock.advance(10.0)
    assert fired == [0]
    clock.advance(0.005)
    assert fired == [0]
    clock.advance(0.005)
    assert fired == [0, 1]
    clock.advance(10)
    assert fired == list(range(1000))
    assert clock.getDelayedCalls() == []


def test_calls_due_together_run_in_the_order_they_were_made():
    clock = Clock()
    queue = TimerQueue(clock)
    ran: list[str] = []
    for name in "abcde":
        queue.callLater(5, lambda name=name: ran.append(name))
    queue.callLater(4, lambda: ran.append("first"))
    clock.advance(5)
    assert ran == ["first", "a", "b", "c", "d", "e"]
    assert len(queue) == 0 and clock.getDelayedCalls() == []


def test_a_sooner_call_moves_the_reactor_call_and_a_cancelled_last_one_removes_it():
    clock = Clock()
    queue = TimerQueue(clock)
    late = queue.callLater(60, lambda: None)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [60]
    soon = queue.callLater(5, lambda: None)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [5]
    assert soon.active() and soon.getTime() == 5
    soon.cancel()
    late.cancel()
    assert not late.active() and len(queue) == 0
    assert clock.getDelayedCalls() == []


def test_cancel_and_called_are_reported_as_a_delayed_call_reports_them():
    clock = Clock()
    queue = TimerQueue(clock)
    ran: list[int] = []
    call = queue.callLater(1, lambda: ran.append(1))
    clock.advance(1)
    assert ran == [1] and not call.active()
    with pytest.raises(AlreadyCalled):
        call.cancel()
    other = queue.callLater(1, lambda: ran.append(2))
    other.cancel()
    with pytest.raises(AlreadyCancelled):
        other.cancel()
    clock.advance(5)
    assert ran == [1]


def test_a_call_cancelled_by_one_due_with_it_does_not_run():
    clock = Clock()
    queue = TimerQueue(clock)
    ran: list[str] = []
    second = None

    def first() -> None:
        ran.append("first")
        assert second is not None
        second.cancel()

    queue.callLater(3, first)
    second = queue.callLater(3, lambda: ran.append("second"))
    clock.advance(3)
    assert ran == ["first"] and len(queue) == 0 and clock.getDelayedCalls() == []


def test_a_call_made_by_a_due_call_waits_for_the_next_timer():
    """As with callLater(0): a call that schedules itself again at once cannot loop in one run."""
    clock = Clock()
    queue = TimerQueue(clock)
    ran: list[float] = []

    def again() -> None:
        ran.append(clock.seconds())
        if len(ran) < 3:
            queue.callLater(0, again)

    queue.callLater(2, again)
    clock.advance(2)
    assert ran == [2, 2, 2]  # Clock.advance runs the new zero-delay timers too, one by one
    assert len(queue) == 0


def test_an_error_in_one_call_is_logged_and_the_others_still_run():
    clock = Clock()
    queue = TimerQueue(clock)
    ran: list[str] = []
    events: list[dict] = []
    queue.callLater(1, lambda: 1 / 0)
    queue.callLater(1, lambda: ran.append("after"))
    queue.callLater(2, lambda: ran.append("later"))
    globalLogPublisher.addObserver(events.append)
    try:
        clock.advance(1)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert ran == ["after"]
    assert [e["log_failure"].type for e in events if "log_failure" in e] == [ZeroDivisionError]
    clock.advance(1)
    assert ran == ["after", "later"] and len(queue) == 0


def test_cancelled_calls_do_not_pile_up():
    """Sessions that come and go leave no heap behind: it is compacted once mostly cancelled."""
    clock = Clock()
    queue = TimerQueue(clock)
    keep = queue.callLater(1000, lambda: None)
    for _ in range(10_000):
        queue.callLater(500, lambda: None).cancel()
    assert len(queue) == 1 and len(queue._heap) <= 2 * TimerQueue.COMPACT_AT + 2
    assert keep.active()


def test_a_cancelled_call_lets_go_of_what_it_would_have_called():
    clock = Clock()
    queue = TimerQueue(clock)
    call = queue.callLater(1, lambda: None)
    call.cancel()
    assert call._func is None


def test_one_queue_per_clock():
    first, second = Clock(), Clock()
    assert timerQueue(first) is timerQueue(first)
    assert timerQueue(first) is not timerQueue(second)
