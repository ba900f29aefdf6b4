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


def test_the_status_endpoint_serves_a_bounded_number_of_connections():
    """Half-sent requests must not run the process out of descriptors (found by the outside attack)."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from echofile.status import makeStatusSite

    factory = makeStatusSite(lambda: False, maxConnections=3)
    address = IPv4Address("TCP", "127.0.0.1", 1)
    protocols = []
    for _ in range(3):
        protocol = factory.buildProtocol(address)
        protocol.makeConnection(StringTransport())
        protocols.append(protocol)
    assert factory.buildProtocol(address) is None  # the fourth is closed at once
    protocols[0].connectionLost(None)
    assert factory.buildProtocol(address) is not None
    assert factory.wrappedFactory.timeOut == 10


def test_a_session_takes_one_locked_metric_update_and_sessions_open_still_counts_it(monkeypatch):
    """echofile_sessions_open follows sessions opening and closing without the gauge's lock (accepted keeps its)."""
    from prometheus_client import values
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from echofile import metrics
    from echofile.admission import Admission, AdmissionPolicy
    from echofile.limits import ConnectionLimiter

    clock = Clock()
    policy = AdmissionPolicy(clock, ConnectionLimiter(10, 10, service="unit-test", clock=clock), deadline=None)

    def sample(name: str) -> float:
        value = metrics.REGISTRY.get_sample_value(name, {"service": "unit-test"})
        return 0.0 if value is None else value

    updates: list[float] = []
    locked = values.MutexValue.inc
    monkeypatch.setattr(values.MutexValue, "inc", lambda self, amount: updates.append(amount) or locked(self, amount))
    opened, accepted = sample("echofile_sessions_open"), sample("echofile_connections_accepted_total")
    ready: list[str] = []
    admissions = []
    for port in (1, 2):
        admission = Admission(
            policy, StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port)),
            lambda peer, key: ready.append(key), lambda: None,
        )
        admission.begin()
        admissions.append(admission)
    assert ready == ["127.0.0.1", "127.0.0.1"]
    assert sample("echofile_sessions_open") == opened + 2
    admissions[0].end()
    assert sample("echofile_sessions_open") == opened + 1
    assert sample("echofile_connections_accepted_total") == accepted + 2
    assert updates == [1, 1]  # the two accepted increments: the open count takes no lock
    admissions[1].end()
    assert sample("echofile_sessions_open") == opened
