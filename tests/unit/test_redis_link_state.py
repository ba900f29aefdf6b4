"""RedisLink's state is what its connections' own ready/lost callbacks said (no peeking into txredisapi)."""

from __future__ import annotations

from twisted.internet.task import Clock

from echofile.redislink import RedisLink, _Commands, _Subscriber, parseRedisURL


def test_available_only_while_both_connections_are_ready():
    changes: list[bool] = []
    link = RedisLink(parseRedisURL("redis://127.0.0.1:1/0"), Clock(), "ch", "t",
                     lambda: changes.append(link.available), lambda m: None)
    commands, subscriber, stray = _Commands(), _Subscriber(), _Commands()
    assert not link.available
    link._connectionReady(commands)
    assert not link.available and changes == []  # the subscription is not there yet
    link._connectionReady(subscriber)
    assert link.available and link.commands is commands and changes == [True]
    link._connectionLost(stray)  # lost before it was ever ready: nothing changes
    assert link.available and changes == [True]
    link._connectionLost(subscriber)
    assert not link.available and link.commands is commands and changes == [True, False]
    link._connectionLost(commands)
    assert link.commands is None and changes == [True, False]
    link._connectionReady(_Subscriber())
    link._connectionReady(_Commands())
    assert link.available and changes == [True, False, True]
