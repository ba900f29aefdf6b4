"""Per-address login penalties across connections."""

from __future__ import annotations

from twisted.internet.task import Clock

from echofile.lockout import LoginPenalties, parseExempt
from support import PASSWORD, connect, makeFilesFactory, replies


def test_failures_within_the_window_lock_out():
    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=3, window=60, duration=600)
    for _ in range(2):
        penalties.recordFailure("192.0.2.1")
        clock.advance(20)
    assert not penalties.isLockedOut("192.0.2.1")
    penalties.recordFailure("192.0.2.1")
    assert penalties.isLockedOut("192.0.2.1")
    assert not penalties.isLockedOut("192.0.2.2")
    clock.advance(599)
    assert penalties.isLockedOut("192.0.2.1")
    clock.advance(2)
    assert not penalties.isLockedOut("192.0.2.1")


def test_old_failures_fall_out_of_the_window():
    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=3, window=60)
    for _ in range(10):
        penalties.recordFailure("192.0.2.1")
        clock.advance(31)
    assert not penalties.isLockedOut("192.0.2.1")


def test_exempt_networks_and_off_switch():
    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=1, exempt=[parseExempt("10.0.0.0/8"), parseExempt("::1")])
    penalties.recordFailure("10.1.2.3")
    penalties.recordFailure("::1")
    assert not penalties.isLockedOut("10.1.2.3") and not penalties.isLockedOut("::1")
    off = LoginPenalties(clock, maxFailures=0)
    off.recordFailure("192.0.2.1")
    assert not off.isLockedOut("192.0.2.1") and len(off) == 0


def test_memory_is_bounded():
    penalties = LoginPenalties(Clock(), maxFailures=5, maxAddresses=100)
    for i in range(10_000):
        penalties.recordFailure(f"2001:db8::{i:x}")
    assert len(penalties) == 100


def test_locked_out_address_gets_refused_on_any_connection(served):
    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=4, window=600, duration=600)
    factory = makeFilesFactory(served, clock, penalties=penalties)
    for port in (1, 2):
        protocol, transport = connect(factory, port=port)
        for _ in range(2):
            protocol.dataReceived(b"AUTH wrong\r\n")
            clock.advance(1)
        assert replies(transport)[-1] == b"!Bad password."
    protocol, transport = connect(factory, port=3)
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")  # even the right password
    clock.advance(1)
    assert replies(transport) == [b"#Server Ready.", b"!Too many failed attempts."]
    assert transport.disconnecting
    other, otherTransport = connect(factory, host="192.0.2.7")
    other.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(otherTransport)[-1] == b"#You are logged in."
    clock.advance(600)
    protocol, transport = connect(factory, port=4)
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport)[-1] == b"#You are logged in."


def test_the_active_lockouts_gauge_counts_each_address_until_its_lockout_ends():
    from echofile import metrics
    from twisted.internet.task import Clock

    clock = Clock()
    penalties = LoginPenalties(clock, maxFailures=1, duration=10, maxAddresses=2)
    started = metrics.LOCKOUTS_STARTED._value.get()
    penalties.recordFailure("192.0.2.1")
    clock.advance(5)
    penalties.recordFailure("192.0.2.2")
    assert penalties.active.count() == 2
    assert metrics.LOCKOUTS_STARTED._value.get() == started + 2
    clock.advance(5)  # the first one's ends
    assert penalties.active.count() == 1
    penalties.recordFailure("192.0.2.3")  # the least recently seen (still locked) is forgotten: no longer locked
    penalties.recordFailure("192.0.2.4")
    assert not penalties.isLockedOut("192.0.2.2")
    assert penalties.active.count() == 2
