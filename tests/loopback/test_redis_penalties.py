"""RedisPenalties: failed logins from one address count on every instance that shares a redis-server."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from echofile.redispenalties import RedisPenalties
from support import PASSWORD, connect, makeFilesFactory, replies
from redishelpers import stopRedis, until

ATTACKER = "192.0.2.7"


@inlineCallbacks
def started(port: int, **limits):
    penalties = RedisPenalties(f"redis://127.0.0.1:{port}/0", reactor, **limits)
    penalties.startService()
    yield until(lambda: penalties.available, "Redis")
    return penalties


@pytest_twisted.inlineCallbacks
def test_failures_count_on_every_instance(redisPort):
    a = yield started(redisPort[0], maxFailures=3)
    b = yield started(redisPort[0], maxFailures=3)
    try:
        a.recordFailure(ATTACKER)
        b.recordFailure(ATTACKER)
        a.recordFailure(ATTACKER)  # 2 here + 1 there: locally neither instance has 3
        yield until(lambda: a.isLockedOut(ATTACKER) and b.isLockedOut(ATTACKER), "the shared lock-out")
        assert not a.isLockedOut("192.0.2.8") and not b.isLockedOut("192.0.2.8")
        c = yield started(redisPort[0], maxFailures=3)  # started later: reads the lock-outs already set
        try:
            yield until(lambda: c.isLockedOut(ATTACKER), "the lock-out on a new instance")
        finally:
            yield c.stopService()
    finally:
        yield a.stopService()
        yield b.stopService()


@pytest_twisted.inlineCallbacks
def test_exempt_addresses_are_never_counted(redisPort):
    from echofile.lockout import parseExempt

    a = yield started(redisPort[0], maxFailures=1, exempt=[parseExempt("192.0.2.0/24")])
    b = yield started(redisPort[0], maxFailures=1)
    try:
        a.recordFailure(ATTACKER)
        b.recordFailure("198.51.100.1")
        yield until(lambda: a.isLockedOut("198.51.100.1"), "the other lock-out")
        assert not a.isLockedOut(ATTACKER) and not b.isLockedOut(ATTACKER)
    finally:
        yield a.stopService()
        yield b.stopService()


@pytest_twisted.inlineCallbacks
def test_without_redis_each_instance_counts_its_own(redisPort):
    a = yield started(redisPort[0], maxFailures=2)
    b = yield started(redisPort[0], maxFailures=2)
    try:
        stopRedis(redisPort[1])
        yield until(lambda: not a.available and not b.available, "both to notice Redis is gone")
        a.recordFailure(ATTACKER)
        b.recordFailure(ATTACKER)
        assert not a.isLockedOut(ATTACKER) and not b.isLockedOut(ATTACKER)
        a.recordFailure(ATTACKER)
        assert a.isLockedOut(ATTACKER) and not b.isLockedOut(ATTACKER)
    finally:
        yield a.stopService()
        yield b.stopService()


@pytest_twisted.inlineCallbacks
def test_a_session_on_another_instance_is_refused(served, redisPort):
    a = yield started(redisPort[0], maxFailures=2)
    b = yield started(redisPort[0], maxFailures=2)
    try:
        factoryA = makeFilesFactory(served, reactor, penalties=a, authFailureDelay=0)
        factoryB = makeFilesFactory(served, reactor, penalties=b, authFailureDelay=0)
        for factory in (factoryA, factoryB):
            protocol, transport = connect(factory, host=ATTACKER)
            protocol.dataReceived(b"AUTH wrong\r\n")
            yield until(lambda: b"!Bad password." in transport.value(), "the failed AUTH")
        yield until(lambda: a.isLockedOut(ATTACKER), "the lock-out")
        protocol, transport = connect(factoryA, host=ATTACKER, port=40001)
        replies(transport)
        protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
        yield until(lambda: transport.value() != b"", "the answer")
        assert replies(transport) == [b"!Too many failed attempts."]
    finally:
        yield a.stopService()
        yield b.stopService()
