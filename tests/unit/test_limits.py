"""SessionTimer: one DelayedCall for the idle timeout and the login deadline."""

from twisted.internet.task import Clock

from echofile.limits import SessionTimer


def makeTimer(idle=10.0):
    clock = Clock()
    fired: list[str] = []
    timer = SessionTimer(clock, idle, lambda: fired.append("idle"))
    return clock, timer, fired


def test_idle_counts_from_the_last_touch_with_one_call():
    clock, timer, fired = makeTimer()
    timer.start()
    for _ in range(5):
        clock.advance(9)
        timer.touch()
    assert fired == [] and len(clock.getDelayedCalls()) == 1
    clock.advance(10)
    assert fired == ["idle"] and clock.getDelayedCalls() == []


def test_deadline_before_idle_and_cleared():
    clock, timer, fired = makeTimer(idle=300)
    timer.start()
    timer.setDeadline(60, lambda: fired.append("deadline"))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(60)
    assert fired == ["deadline"]
    clock.advance(240)
    assert fired == ["deadline", "idle"]
    clock, timer, fired = makeTimer(idle=300)
    timer.start()
    timer.setDeadline(60, lambda: fired.append("deadline"))
    clock.advance(30)
    timer.clearDeadline()
    clock.advance(100)
    assert fired == []


def test_stop_and_no_timeout():
    clock, timer, fired = makeTimer()
    timer.start()
    timer.stop()
    clock.advance(100)
    assert fired == [] and clock.getDelayedCalls() == []
    clock, timer, fired = makeTimer(idle=None)
    timer.start()
    assert clock.getDelayedCalls() == []
