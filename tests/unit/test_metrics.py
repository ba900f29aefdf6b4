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
