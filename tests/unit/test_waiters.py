"""L{echofile.waiters.Waiters}: the one helper behind whenEmpty/whenDrained/whenReady/whenDisconnected."""

from twisted.python.failure import Failure

from echofile.waiters import Waiters


def test_fire_fires_every_waiter_once_with_the_result():
    waiters: Waiters[str] = Waiters()
    results: list[str] = []
    for _ in range(3):
        waiters.wait().addCallback(results.append)
    assert len(waiters) == 3 and results == []
    waiters.fire("now")
    assert results == ["now"] * 3 and len(waiters) == 0
    waiters.fire("again")
    assert results == ["now"] * 3


def test_a_failure_is_an_errback():
    waiters: Waiters[None] = Waiters()
    errors: list[Failure] = []
    waiters.wait().addErrback(errors.append)
    waiters.fire(Failure(ValueError("busy")))
    assert [e.value.args for e in errors] == [("busy",)]


def test_a_waiter_made_while_firing_waits_for_the_next_fire():
    waiters: Waiters[int] = Waiters()
    later: list[int] = []
    waiters.wait().addCallback(lambda _: waiters.wait().addCallback(later.append))
    waiters.fire(1)
    assert later == [] and len(waiters) == 1
    waiters.fire(2)
    assert later == [2]
