"""
Guest chat names unique across instances (--cluster): one Redis key per
name, C{echofile:guest:<lower-cased name>}, holding the session id, taken
with C{SET NX} and refreshed by the chat's heartbeat with the instance's
lease.  L{echofile.redischat} does presence and delivery around it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from echofile.chat import GUEST_PREFIX

PREFIX = "echofile:"
#: Take the smallest N whose guest name is free (SET NX), atomically, in one round trip.
_TAKE_GUEST_NUMBER = """
local n = 1
while not redis.call('SET', ARGV[1] .. n, ARGV[2], 'NX', 'EX', ARGV[3]) do
  n = n + 1
end
return n
"""
#: Keep a guest name this session holds (or that is free again); never take one another session holds.
_REFRESH_GUEST_NAME = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def isGuest(name: str) -> bool:
    return name.startswith(GUEST_PREFIX)


def guestKey(name: str) -> str:
    """The Redis key of a guest's chat name (names differ in more than case)."""
    return f"{PREFIX}guest:{name[len(GUEST_PREFIX):].lower()}"


def takeGuestName(redis: Any, sid: str, ttl: int) -> Deferred[str]:
    """The smallest free C{~guest<N>} across instances, now held by C{sid} (one round trip)."""
    d = redis.eval(_TAKE_GUEST_NUMBER, [], [f"{PREFIX}guest:guest", sid, ttl])
    return d.addCallback(lambda number: f"{GUEST_PREFIX}guest{number}")


def keepGuestName(redis: Any, name: str, sid: str, ttl: int) -> Deferred[int]:
    """Refresh C{sid}'s hold on C{name}: 1, or 0 if another session holds it."""
    return redis.eval(_REFRESH_GUEST_NAME, [guestKey(name)], [sid, ttl])  # type: ignore[no-any-return]


@inlineCallbacks
def releaseGuestName(redis: Any, name: str, sid: str) -> Any:
    """Free C{name} if C{sid} still holds it."""
    key = guestKey(name)
    holder = yield redis.get(key)
    if holder == sid:
        yield redis.delete(key)
