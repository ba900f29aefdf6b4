"""
L{IChat} across several instances through a Redis broker (PROTOCOL.md
revision 2, "Several instances").

Each instance keeps its own sessions (who they are, how to reach them) and
shares the rest through Redis:

- presence: one hash per instance, C{echofile:presence:<instance>}
  (session id -> chat name), given a 14 s expiry and refreshed by a
  heartbeat every 4 s (two may be missed), so an instance that dies leaves
  WHO within 15 s (PROTOCOL.md), the expiry plus a WHO;
  the set C{echofile:instances} names them, so WHO never scans the keys;
- guest names: C{echofile:guest:<lower-cased name>}, taken with C{SET NX}
  and refreshed by the same heartbeat, so they are unique across instances
  (L{echofile.redisguests});
- events: published on C{echofile:events}; every instance delivers them to
  its own sessions.

Without the broker, chat requests fail with L{ChatUnavailable}; joining
still works (a guest gets a name unique on this instance) and the session
is announced once the broker is back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from echofile import metrics
from echofile.chat import (
    GUEST_PREFIX, RENAMED_NOTICE, ChatUnavailable, GuestNumbers, IChat, IChatListener, NicknameInUse, NotOnline,
    deliver,
)
from echofile.redisguests import PREFIX as _PREFIX
from echofile.redisguests import guestKey, isGuest, keepGuestName, releaseGuestName, takeGuestName
from echofile.redislink import RedisAddress, RedisLink, UsesLink, asRedisAddress, parseRedisURL
from echofile.text import isClean, sanitize

__all__ = ["RedisChat", "parseRedisURL"]

#: The event a guest gets when the name it has is another session's (both got it while Redis was away).
TAKEN_NOTICE = "*[server]: {old} is taken on another instance, you are now {new}."
#: Below PROTOCOL.md's 15 s: the last refresh may come just before an instance dies.
PRESENCE_TTL = 14
HEARTBEAT = 4.0
_EVENTS = _PREFIX + "events"
_INSTANCES = _PREFIX + "instances"
#: Every live instance's sessions, flat (id, name, id, name, ...), in one round trip; forgets dead instances.
_EVERYONE = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. id)
  if #h == 0 then redis.call('SREM', KEYS[1], id) end
  for i = 1, #h do out[#out + 1] = h[i] end
end
return out
"""


@implementer(IChat)
class RedisChat(UsesLink, Service):
    """Presence and delivery shared by every instance that uses the same Redis database."""

    name = "chat"
    _log = Logger()

    def __init__(
        self, url: str | RedisAddress, clock: IReactorTime, instance: str | None = None,
        presenceTTL: int = PRESENCE_TTL, heartbeat: float = HEARTBEAT,
    ) -> None:
        self.address = asRedisAddress(url)
        self._host, self._port, self._db = self.address.host, self.address.port, self.address.db
        self._clock = clock
        self._ttl = presenceTTL
        self._interval = heartbeat
        self.instance = instance or uuid.uuid4().hex[:12]
        self._presenceKey = f"{_PREFIX}presence:{self.instance}"
        self._ids: dict[IChatListener, str] = {}
        self._sessions: dict[str, IChatListener] = {}
        self._names: dict[str, str] = {}  # session id -> chat name
        self._serial = 0
        self._localNumbers = GuestNumbers()
        self._link = RedisLink(self.address, clock, _EVENTS, "chat", self._brokerChanged, self._received)
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock
        # Read in the scrape's thread: attribute reads only (one cluster client per process).
        metrics.CLUSTER_BROKER_CONNECTED.set_function(lambda: 1.0 if self.available else 0.0)

    # -- life cycle --------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._link.start()
        self._heartbeat.start(self._interval, now=False)

    @inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self.available:
            try:
                keys = [self._presenceKey] + [guestKey(n) for n in self._names.values() if isGuest(n)]
                yield self._redis.delete(keys)
                yield self._redis.srem(_INSTANCES, self.instance)
            except Exception:
                self._log.failure("chat: could not remove this instance's presence from Redis")
        yield self._link.stop()


    def _brokerChanged(self) -> None:
        if not self.running:
            return  # stopping: the connections are closed on purpose
        if self.available:
            self._log.info("chat: connected to Redis at {address} as instance {instance}",
                           address=str(self.address), instance=self.instance)
            self._beat()
        else:
            self._log.warn("chat: lost Redis at {address}, chat is unavailable", address=str(self.address))

    def _require(self) -> Any:
        if not self.available:
            raise ChatUnavailable()
        return self._redis

    @inlineCallbacks
    def _ask(self, command: str, *args: Any) -> Any:
        redis = self._require()
        try:
            result = yield getattr(redis, command)(*args)
        except (txredisapi.ConnectionError, txredisapi.TimeoutError):
            raise ChatUnavailable() from None
        return result

    def _beat(self) -> Deferred[None] | None:
        """Refresh this instance's presence and its guests' names (their expiry is the instance's lease)."""
        if not self.available:
            return None
        redis = self._redis
        ds = []
        if self._names:
            ds.append(redis.hmset(self._presenceKey, dict(self._names)))
            ds.append(redis.expire(self._presenceKey, self._ttl))
            ds.append(redis.sadd(_INSTANCES, self.instance))
        for sid, name in self._names.items():
            if isGuest(name):
                kept = keepGuestName(redis, name, sid, self._ttl)
                ds.append(kept.addCallback(self._keptName, sid, name))
        d = gatherResults(ds, consumeErrors=True)
        d.addErrback(lambda f: self._log.warn("chat: heartbeat failed: {reason}", reason=f.value))
        return d

    def _keptName(self, kept: int, sid: str, name: str) -> Any:
        """
        Another session holds this guest's name: both got it while Redis was
        away (each instance then only knows its own), or this instance's
        lease lapsed.  The holder keeps it; this session gets a fresh one.
        """
        if kept or self._names.get(sid) != name:
            return None
        return self._renameTaken(sid, name)

    @inlineCallbacks
    def _renameTaken(self, sid: str, old: str) -> Any:
        new = yield takeGuestName(self._redis, sid, self._ttl)
        if self._names.get(sid) != old:  # it left or picked a nickname meanwhile
            yield releaseGuestName(self._redis, new, sid)
            return
        self._names[sid] = new
        yield self._redis.hset(self._presenceKey, sid, new)
        self._sessions[sid].deliverEvent(TAKEN_NOTICE.format(old=old, new=new))

    # -- IChat -------------------------------------------------------------------------------

    @inlineCallbacks
    def join(self, session: IChatListener, account: str, guest: bool) -> Any:
        if session in self._ids:
            return self._names[self._ids[session]]
        self._serial += 1
        sid = f"{self.instance}:{self._serial}"
        name = account
        if guest:
            name = yield self._guestName(sid)
        self._ids[session], self._sessions[sid], self._names[sid] = sid, session, name
        if self.available:
            try:
                yield self._redis.hset(self._presenceKey, sid, name)
                yield self._redis.expire(self._presenceKey, self._ttl)
                yield self._redis.sadd(_INSTANCES, self.instance)
            except Exception:
                pass  # the next heartbeat announces it
        return name

    @inlineCallbacks
    def _guestName(self, sid: str) -> Any:
        """The smallest free C{~guest<N>} across instances (one round trip), or on this instance without Redis."""
        if self.available:
            try:
                name = yield takeGuestName(self._redis, sid, self._ttl)
                return name
            except Exception:
                pass  # fall back to a name unique on this instance
        taken = {n.lower() for n in self._names.values()}
        number = self._localNumbers.take(lambda n: f"{GUEST_PREFIX}guest{n}" in taken)
        return f"{GUEST_PREFIX}guest{number}"

    def leave(self, session: IChatListener) -> None:
        sid = self._ids.pop(session, None)
        if sid is None:
            return
        self._sessions.pop(sid, None)
        name = self._names.pop(sid)
        if self.available:
            # The name first: once WHO no longer lists the session, its name is free.
            d = releaseGuestName(self._redis, name, sid) if isGuest(name) else succeed(None)
            d.addCallback(lambda _: self._redis.hdel(self._presenceKey, sid))
            d.addErrback(lambda f: None)  # expires with the instance's lease

    @inlineCallbacks
    def rename(self, session: IChatListener, nickname: str) -> Any:
        sid = self._ids[session]
        old = self._names[sid]
        if not isGuest(old):
            raise ValueError(f"{old} is an account, not a guest: accounts have no nicknames")
        new = GUEST_PREFIX + nickname
        if new == old:
            return new
        if new.lower() != old.lower():
            ok = yield self._ask("set", guestKey(new), sid, self._ttl, None, True)
            if not ok:
                raise NicknameInUse(nickname)
            yield releaseGuestName(self._redis, old, sid)
        self._names[sid] = new
        yield self._ask("hset", self._presenceKey, sid, new)
        yield self._publish(RENAMED_NOTICE.format(old=old, new=new), sid)
        return new

    @inlineCallbacks
    def online(self) -> Any:
        names: set[str] = set()
        for sid, name in (yield self._everyone()):
            names.add(name)
        return sorted(names)

    @inlineCallbacks
    def _everyone(self) -> Any:
        """(session id, chat name) for every session on every live instance."""
        flat = yield self._ask("eval", _EVERYONE, [_INSTANCES], [f"{_PREFIX}presence:"])
        return list(zip(flat[0::2], flat[1::2]))

    @inlineCallbacks
    def say(self, session: IChatListener, text: str) -> Any:
        sid = self._ids[session]
        sender = self._names[sid]
        count = yield self._publish(f"*{sender}: {sanitize(text)}", sid)
        return count

    @inlineCallbacks
    def message(self, session: IChatListener, recipient: str, text: str) -> Any:
        sid = self._ids[session]
        sender = self._names[sid]
        everyone = yield self._everyone()
        if not any(name == recipient and other != sid for other, name in everyone):
            raise NotOnline(recipient)
        yield self._publish(f"*{sender} (private): {sanitize(text)}", sid, to=recipient)
        return 1

    def _publish(self, line: str, sender: str, to: str | None = None) -> Any:
        return self._ask("publish", _EVENTS, json.dumps({"line": line, "except": sender, "to": to}))

    def _received(self, message: Any) -> None:
        try:
            event = json.loads(message)
            line, skip, to = event["line"], event["except"], event.get("to")
        except (ValueError, KeyError, TypeError):
            self._log.warn("chat: ignored a malformed event from Redis")
            return
        if not isinstance(line, str) or not line.startswith("*") or not isClean(line):
            self._log.warn("chat: ignored an event from Redis that is not one clean line")
            return
        recipients = [
            session for sid, session in self._sessions.items()
            if sid != skip and (to is None or self._names.get(sid) == to)
        ]
        deliver(line, recipients, self._log)
