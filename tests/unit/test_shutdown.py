"""Graceful shutdown: drain sessions, finish bodies, abort after the timeout."""

from __future__ import annotations

from twisted.internet.task import Clock

from echofile.echo import EchoFactory
from echofile.limits import ConnectionLimiter
from echofile.shutdown import GracefulShutdown
from support import PASSWORD, connect, drainTransfer, makeFilesFactory, replies


def stopper(factories, clock, timeout=10.0):
    service = GracefulShutdown([f.sessions for f in factories], clock, timeout, installSignalHandlers=False)
    service.startService()
    return service


def lose(protocol, transport):
    """What the reactor does once a closing transport is really closed."""
    transport.disconnected = True
    protocol.connectionLost(None)


def loggedIn(factory, port):
    protocol, transport = connect(factory, port=port)
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    replies(transport)
    return protocol, transport


def test_idle_sessions_are_told_and_the_drain_ends(served):
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    sessions = [loggedIn(factory, port) for port in (1, 2)]
    done = stopper([factory], clock).stopService()
    assert not done.called
    for protocol, transport in sessions:
        assert replies(transport) == [b"!Server shutting down."]
        assert transport.disconnecting
        lose(protocol, transport)
    assert done.called


def test_transfer_in_flight_finishes_first(served):
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    protocol, transport = loggedIn(factory, 1)
    protocol.dataReceived(b"FILE binary.bin\r\n")
    done = stopper([factory], clock).stopService()
    assert not transport.disconnecting
    drainTransfer(transport)
    lines = transport.value().split(b"\r\n")
    assert lines[-3:] == [b"#File binary.bin sent successfully.", b"!Server shutting down.", b""]
    lose(protocol, transport)
    assert done.called


def test_drain_timeout_aborts_without_trailer(served):
    clock = Clock()
    factory = makeFilesFactory(served, clock)
    (served / "big.bin").write_bytes(b"b" * (1024 * 1024))
    protocol, transport = loggedIn(factory, 1)
    protocol.dataReceived(b"FILE big.bin\r\n")
    transport.producer.resumeProducing()  # a chunk or two, then the client stalls
    done = stopper([factory], clock, timeout=10).stopService()
    clock.advance(10)
    assert transport.disconnected  # StringTransport records abortConnection this way
    assert b"sent successfully" not in transport.value()
    protocol.connectionLost(None)
    assert done.called


def test_echo_sessions_are_closed(served):
    clock = Clock()
    echo = EchoFactory(clock, ConnectionLimiter(10, 10, "echo"), 300.0)
    protocol = echo.buildProtocol(None)
    from twisted.internet.testing import StringTransport

    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"pending")
    done = stopper([echo], clock).stopService()
    assert transport.value() == b"pending" and transport.disconnecting
    lose(protocol, transport)
    assert done.called


def test_nothing_to_drain(served):
    clock = Clock()
    assert stopper([makeFilesFactory(served, clock)], clock).stopService().called


def test_the_status_listener_stops_only_after_the_drain(served):
    """twistd stops every service at once: the /healthz listener (AfterDrain) waits for the drain."""
    from twisted.application.service import MultiService, Service

    from echofile.status import AfterDrain

    clock = Clock()
    factory = makeFilesFactory(served, clock)
    protocol, transport = loggedIn(factory, 1)
    top = MultiService()
    shutdown = GracefulShutdown([factory.sessions], clock, 10.0, installSignalHandlers=False)
    shutdown.setServiceParent(top)
    status = AfterDrain(shutdown.whenDrained)
    listener = Service()
    listener.setServiceParent(status)
    status.setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    assert shutdown.draining
    assert listener.running, "the status listener stopped while sessions were still draining"
    lose(protocol, transport)
    assert not listener.running
    assert stopped.called
    assert shutdown.whenDrained().called  # after the drain: at once
