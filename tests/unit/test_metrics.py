"""The reactor lag probe on a fake clock."""

from twisted.internet.task import Clock

from echofile.metrics import ReactorLagProbe


def test_lag_probe_records_how_late_each_call_ran():
    clock = Clock()
    seen: list[float] = []
    probe = ReactorLagProbe(clock, interval=0.5, observe=seen.append)
    probe.startService()
    clock.advance(0.5)
    clock.advance(2.0)  # the loop was busy: the next call runs 1.5 s late
    assert seen == [0.0, 1.5]
    probe.stopService()
    assert clock.getDelayedCalls() == []
