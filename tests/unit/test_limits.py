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


def test_refusals_over_a_cap_are_logged_within_a_budget():
    """
    A client at its cap that reconnects in a loop is refused at accept, for
    the price of a connect(): one warning per refusal let one address write
    about 300 KB/s of log (2300 refusals/s on loopback).  The limiter logs
    the first refusals of a window one by one, then one line with the count.
    """
    from twisted.logger import globalLogPublisher

    from echofile.limits import REFUSAL_LOG_LIMIT, REFUSAL_LOG_WINDOW, ConnectionLimiter

    clock = Clock()
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        limiter = ConnectionLimiter(100, 1, "files", clock=clock)
        assert limiter.admit("10.0.0.1")
        for _ in range(1000):
            assert not limiter.admit("10.0.0.1")
        assert limiter.admit("10.0.0.2")  # another address is still admitted (its own cap)
        refusals = [e for e in logged if "refused" in e["log_format"]]
        assert len(refusals) == REFUSAL_LOG_LIMIT
        clock.advance(REFUSAL_LOG_WINDOW)
        assert not limiter.admit("10.0.0.1")
        refusals = [e for e in logged if "refused" in e["log_format"]]
        assert len(refusals) == REFUSAL_LOG_LIMIT + 2  # the count of the suppressed ones, then this one
        summary = refusals[REFUSAL_LOG_LIMIT]
        assert summary["count"] == 1000 - REFUSAL_LOG_LIMIT and summary["service"] == "files"
    finally:
        globalLogPublisher.removeObserver(logged.append)
