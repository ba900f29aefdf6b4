"""
What a new files session costs (issue 16): counted, not timed.

Each test counts something a session's accept, admission and greeting
does per connection (calls, objects it keeps): the figures in
docs/performance.md ("What a new files session costs") come from them.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from echofile.limits import SessionTimer
from support import connect, makeFilesFactory, replies


class CountingClock(Clock):
    """A Clock that counts the calls scheduled on it (cancelled ones too)."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0

    def callLater(self, delay, callable, *args, **kw):  # type: ignore[no-untyped-def, override]
        self.scheduled += 1
        return super().callLater(delay, callable, *args, **kw)


def test_a_greeted_session_schedules_one_call(served):
    """
    The idle timeout and the login deadline start together: one DelayedCall,
    where scheduling the idle call and then cancelling it for the sooner
    deadline left a second (cancelled) one per session in the reactor's heap.
    """
    clock = CountingClock()
    protocol, transport = connect(makeFilesFactory(served, clock, idleTimeout=300.0, loginTimeout=60.0))
    assert replies(transport) == [b"#Server Ready."]
    assert clock.scheduled == 1
    assert [call.getTime() for call in clock.getDelayedCalls()] == [60.0]


def test_start_with_a_deadline_fires_both_from_one_call():
    clock = CountingClock()
    fired: list[str] = []
    timer = SessionTimer(clock, 300.0, lambda: fired.append("idle"))
    timer.start(60, lambda: fired.append("deadline"))
    assert clock.scheduled == 1
    clock.advance(59.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == ["deadline"]
    clock.advance(240)
    assert fired == ["deadline", "idle"]
