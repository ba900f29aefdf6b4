"""
Login penalties counted on every instance that shares a Redis (PROTOCOL.md
revision 2, "Several instances": failed AUTHs from one address count on
every instance).

L{RedisPenalties} is a L{LoginPenalties}: it still counts on this instance
(the fallback when Redis is away), and also counts every failure in Redis
(C{INCR} of C{echofile:failures:<address>}, with C{EXPIRE} of the window on
the first one).  The failure that reaches the limit sets
C{echofile:locked:<address>} for the lock-out's duration and publishes it on
C{echofile:lockouts}; every instance keeps the lock-outs it heard of, so the
check in AUTH stays a local, synchronous look-up.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from echofile.lockout import LoginPenalties
from echofile.redislink import RedisAddress, RedisLink, UsesLink, asRedisAddress
from echofile.text import sanitize

_PREFIX = "echofile:"
_LOCKOUTS = _PREFIX + "lockouts"


class RedisPenalties(UsesLink, LoginPenalties, Service):
    """L{LoginPenalties} shared through Redis; the constructor takes the same limits."""

    name = "penalties"
    _log = Logger()

    def __init__(self, url: str | RedisAddress, clock: IReactorTime, **limits: Any) -> None:
        LoginPenalties.__init__(self, clock, **limits)
        self.address = asRedisAddress(url)
        # Lock-outs heard from Redis: address -> until (on this clock), at most maxAddresses.
        self._shared: OrderedDict[str, float] = OrderedDict()
        self._link = RedisLink(self.address, clock, _LOCKOUTS, "files", self._brokerChanged, self._received)

    def startService(self) -> None:
        Service.startService(self)
        self._link.start()

    @inlineCallbacks
    def stopService(self) -> Any:
        Service.stopService(self)
        yield self._link.stop()


    # -- LoginPenalties ----------------------------------------------------------------------

    def isLockedOut(self, address: str) -> bool:
        if LoginPenalties.isLockedOut(self, address):
            return True
        until = self._shared.get(address)
        if until is None:
            return False
        if until > self._clock.seconds():
            return True
        del self._shared[address]
        return False

    def _lockedUntil(self, address: str) -> float:
        return max(LoginPenalties._lockedUntil(self, address), self._shared.get(address, 0.0))

    def recordFailure(self, address: str) -> None:
        LoginPenalties.recordFailure(self, address)
        if self.maxFailures <= 0 or self._isExempt(address) or not self.available:
            return
        self._count(address).addErrback(
            lambda f: self._log.warn("files: could not count a failed login in Redis: {reason}", reason=f.value)
        )

    @inlineCallbacks
    def _count(self, address: str) -> Any:
        key = f"{_PREFIX}failures:{address}"
        failures = yield self._redis.incr(key)
        if failures == 1:
            yield self._redis.expire(key, max(1, int(self.window)))
        if failures >= self.maxFailures:
            duration = max(1, int(self.duration))
            yield self._redis.set(f"{_PREFIX}locked:{address}", "1", expire=duration)
            yield self._redis.delete(key)
            yield self._redis.publish(_LOCKOUTS, json.dumps({"address": address, "duration": duration}))

    # -- the subscription --------------------------------------------------------------------

    def _brokerChanged(self) -> None:
        if not self.running:
            return  # stopping: the connections are closed on purpose
        if not self.available:
            self._log.warn("files: lost Redis, failed logins are counted on this instance only")
            return
        self._log.info("files: counting failed logins on every instance through Redis at {address}",
                       address=str(self.address))
        self._loadLockouts().addErrback(
            lambda f: self._log.warn("files: could not read the lock-outs from Redis: {reason}", reason=f.value)
        )

    @inlineCallbacks
    def _loadLockouts(self) -> Any:
        """The lock-outs set while this instance was not listening (it just started, or reconnected)."""
        cursor = 0
        while True:  # SCAN, not KEYS: Redis keeps serving the other instances meanwhile
            cursor, keys = yield self._redis.scan(cursor, f"{_PREFIX}locked:*", 500)
            for key in keys:
                ttl = yield self._redis.ttl(key)
                if ttl and ttl > 0:
                    self._remember(key[len(f"{_PREFIX}locked:"):], ttl)
            if int(cursor) == 0:
                return

    def _received(self, message: Any) -> None:
        try:
            event = json.loads(message)
            address, duration = str(event["address"]), float(event["duration"])
        except (ValueError, KeyError, TypeError):
            self._log.warn("files: ignored a malformed lock-out from Redis")
            return
        self._remember(address, duration)

    def _remember(self, address: str, duration: float) -> None:
        if self._isExempt(address):
            return
        if address not in self._shared:
            self._log.warn(
                "files: {peer} locked out of AUTH for {duration}s (failures on all instances)",
                peer=sanitize(address), duration=duration,
            )
        self._shared.pop(address, None)
        self._shared[address] = self._clock.seconds() + duration
        self._lockChanged(address)
        while len(self._shared) > self.maxAddresses:
            forgotten, _ = self._shared.popitem(last=False)
            self._lockChanged(forgotten)
