"""
RedisChat: two instances (two factories, each with its own RedisChat) share
one real redis-server started here on a free loopback port.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from twisted.internet.task import deferLater

from echofile.redischat import RedisChat, parseRedisURL
from redishelpers import freePort, guestOn, lines, startRedis, stopRedis, until
from support import PASSWORD, connect, drainTransfer, makeFilesFactory


@pytest.fixture
def instances(served, redisPort):
    port, _ = redisPort
    chats = [RedisChat(f"redis://127.0.0.1:{port}/0", reactor, instance=name) for name in ("a", "b")]
    for chat in chats:
        chat.startService()
    pytest_twisted.blockon(until(lambda: all(c.available for c in chats), "both instances to reach Redis"))
    factories = [makeFilesFactory(served, reactor, chat=chat) for chat in chats]
    yield factories
    for chat in chats:
        pytest_twisted.blockon(chat.stopService())


def test_parse_url():
    a = parseRedisURL("redis://127.0.0.1:6380/2")
    assert (a.host, a.port, a.db) == ("127.0.0.1", 6380, 2)
    a = parseRedisURL("redis://redis.local")
    assert (a.host, a.port, a.db) == ("redis.local", 6379, 0)
    for bad in ("http://x:1", "redis://", "redis://x:1/db"):
        with pytest.raises(ValueError):
            parseRedisURL(bad)


@pytest_twisted.inlineCallbacks
def test_chat_spans_instances(instances):
    a, b = instances
    one, oneT = yield guestOn(a, 1)
    two, twoT = yield guestOn(b, 2)

    two.dataReceived(b"WHO\r\n")
    yield until(lambda: lines(twoT)[-1:] == [b"~guest2"], "WHO on b")
    assert lines(twoT) == [b"#2 users online.", b"~guest1", b"~guest2"]  # guest names unique across instances
    twoT.clear()

    one.dataReceived(b"SAY hello from a\r\n")
    yield until(lambda: lines(twoT) == [b"*~guest1: hello from a"], "the SAY on b")
    yield until(lambda: lines(oneT) == [b"#Said."], "#Said. on a")
    oneT.clear(), twoT.clear()

    two.dataReceived(b"MSG ~guest1 psst\r\nMSG ~guest2 me\r\n")
    yield until(lambda: lines(oneT) == [b"*~guest2 (private): psst"], "the MSG on a")
    yield until(lambda: len(lines(twoT)) == 2, "both MSG replies")
    assert lines(twoT) == [b"#Sent to ~guest1.", b"!No such user online: ~guest2."]
    oneT.clear(), twoT.clear()

    one.dataReceived(b"NICK ada\r\n")
    yield until(lambda: lines(twoT) == [b"*[server]: ~guest1 is now ~ada."], "the rename event on b")
    assert lines(oneT) == [b"#You are now ~ada."]
    two.dataReceived(b"NICK ADA\r\n")
    yield until(lambda: lines(twoT)[-1:] == [b"!Nickname ~ADA is in use."], "NICK in use across instances")

    one.connectionLost(None)
    for _ in range(100):  # leaving reaches Redis a little later
        twoT.clear()
        two.dataReceived(b"WHO\r\n")
        yield until(lambda: b"online." in twoT.value() and twoT.value().endswith(b"\r\n~guest2\r\n"), "WHO")
        if lines(twoT)[0] == b"#1 users online.":
            break
    assert lines(twoT) == [b"#1 users online.", b"~guest2"]
    twoT.clear()
    two.dataReceived(b"NICK ada\r\n")
    yield until(lambda: lines(twoT)[-1:] == [b"#You are now ~ada."], "the freed nickname")


@pytest_twisted.inlineCallbacks
def test_chat_unavailable_without_redis(instances, redisPort):
    a, _ = instances
    one, oneT = yield guestOn(a, 1)
    stopRedis(redisPort[1])
    yield until(lambda: not a.chat.available, "a to notice Redis is gone")
    one.dataReceived(b"WHO\r\nSAY hi\r\nLIST docs\r\n")
    yield until(lambda: lines(oneT)[-1:] == [b"9 readme.txt"], "the listing")
    assert lines(oneT) == [
        b"!Chat is unavailable, try again later.", b"!Chat is unavailable, try again later.",
        b"#1 entries in docs.", b"9 readme.txt",
    ]
    other, otherT = connect(a, port=3)
    other.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")  # logging in still works
    yield until(lambda: b"#You are logged in.\r\n" in otherT.value(), "a login without Redis")


@pytest_twisted.inlineCallbacks
def test_an_instance_that_dies_leaves_who(served, redisPort):
    port, _ = redisPort
    url = f"redis://127.0.0.1:{port}/0"
    a = RedisChat(url, reactor, instance="a", presenceTTL=1, heartbeat=0.2)
    b = RedisChat(url, reactor, instance="b", presenceTTL=1, heartbeat=0.2)
    for chat in (a, b):
        chat.startService()
    yield until(lambda: a.available and b.available, "both instances to reach Redis")
    try:
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=a), 1)
        yield guestOn(makeFilesFactory(served, reactor, chat=b), 2)
        # b dies: no goodbye to Redis, no more heartbeats.
        b._heartbeat.stop()
        yield b._link.stop()
        for _ in range(100):
            oneT.clear()
            one.dataReceived(b"WHO\r\n")
            yield until(lambda: b"users online." in oneT.value() and oneT.value().endswith(b"~guest1\r\n")
                        or oneT.value().endswith(b"~guest2\r\n"), "WHO")
            if lines(oneT)[0] == b"#1 users online.":
                break
            yield deferLater(reactor, 0.1, lambda: None)
        assert lines(oneT) == [b"#1 users online.", b"~guest1"]
        oneT.clear()
        one.dataReceived(b"NICK guest2\r\n")  # b's guest name expired with it
        yield until(lambda: lines(oneT) == [b"#You are now ~guest2."], "the dead instance's name")
    finally:
        yield a.stopService()


@pytest_twisted.inlineCallbacks
def test_an_instance_reconnects_by_itself(served, redisPort, tmp_path):
    port, process = redisPort
    a = RedisChat(f"redis://127.0.0.1:{port}/0", reactor, instance="a", heartbeat=0.2)
    a.startService()
    yield until(lambda: a.available, "Redis")
    try:
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=a), 1)
        stopRedis(process)
        yield until(lambda: not a.available, "a to notice Redis is gone")
        restarted = yield startRedis(port, tmp_path)  # empty: presence must be announced again
        try:
            yield until(lambda: a.available, "a to reconnect")
            for _ in range(100):
                oneT.clear()
                one.dataReceived(b"WHO\r\n")
                yield until(lambda: b"users online." in oneT.value(), "WHO")
                yield until(lambda: len(lines(oneT)) == 1 + int(lines(oneT)[0].split()[0][1:]), "the names")
                if lines(oneT) == [b"#1 users online.", b"~guest1"]:
                    break
                yield deferLater(reactor, 0.1, lambda: None)
            assert lines(oneT) == [b"#1 users online.", b"~guest1"]
        finally:
            stopRedis(restarted)
    finally:
        yield a.stopService()


@pytest_twisted.inlineCallbacks
def test_events_from_redis_must_be_one_clean_line(instances, redisPort):
    """Whoever can publish on the broker still cannot put a control character on a client's screen."""
    import json

    import txredisapi

    a, _ = instances
    one, oneT = yield guestOn(a, 1)
    publisher = yield txredisapi.Connection("127.0.0.1", redisPort[0], reconnect=False)
    try:
        for event in (
            {"line": "*x: hi\r\n#You are logged in.", "except": "", "to": None},
            {"line": "*x: \x1b[2J", "except": "", "to": None},
            {"line": "#Said.", "except": "", "to": None},
            "not json",
            {"no line": 1},
            {"line": "*x: fine", "except": "", "to": None},
        ):
            yield publisher.publish("echofile:events", event if isinstance(event, str) else json.dumps(event))
        yield until(lambda: oneT.value() != b"", "the clean event")
        assert lines(oneT) == [b"*x: fine"]
    finally:
        yield publisher.disconnect()


@pytest_twisted.inlineCallbacks
def test_the_heartbeat_never_takes_a_name_another_instance_holds(served, redisPort):
    """After a name expired (a partition) and another instance took it, the heartbeat keeps its hands off."""
    import txredisapi

    port, _ = redisPort
    url = f"redis://127.0.0.1:{port}/0"
    a = RedisChat(url, reactor, instance="a", heartbeat=0.1)
    b = RedisChat(url, reactor, instance="b")
    for chat in (a, b):
        chat.startService()
    redis = yield txredisapi.Connection("127.0.0.1", port, reconnect=False)
    try:
        yield until(lambda: a.available and b.available, "Redis")
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=a), 1)
        a._heartbeat.stop()
        yield redis.delete("echofile:guest:guest1")  # as if it expired
        yield a._beat()  # free again: a takes its name back
        assert (yield redis.get("echofile:guest:guest1")) == "a:1"
        yield redis.delete("echofile:guest:guest1")
        yield guestOn(makeFilesFactory(served, reactor, chat=b), 2)
        assert (yield redis.get("echofile:guest:guest1")) == "b:1"
        yield a._beat()
        assert (yield redis.get("echofile:guest:guest1")) == "b:1"
        # ... and a's session, whose name b's holds now, gets a fresh one and is told.
        assert lines(oneT) == [b"*[server]: ~guest1 is taken on another instance, you are now ~guest2."]
        assert (yield redis.get("echofile:guest:guest2")) == "a:1"
    finally:
        yield redis.disconnect()
        for chat in (a, b):
            yield chat.stopService()


@pytest_twisted.inlineCallbacks
def test_who_and_msg_never_scan_the_keys(instances, redisPort):
    """KEYS walks the whole database (failure counters of many addresses included): WHO must not use it."""
    import txredisapi

    a, b = instances
    one, oneT = yield guestOn(a, 1)
    yield guestOn(b, 2)
    redis = yield txredisapi.Connection("127.0.0.1", redisPort[0], reconnect=False)
    try:
        yield redis.execute_command("CONFIG", "RESETSTAT")
        one.dataReceived(b"WHO\r\nMSG ~guest2 hi\r\n")
        yield until(lambda: oneT.value().endswith(b"#Sent to ~guest2.\r\n"), "WHO and MSG")
        stats = yield redis.execute_command("INFO", "commandstats")
        assert "cmdstat_eval" in stats and "cmdstat_keys" not in stats and "cmdstat_scan" not in stats
    finally:
        yield redis.disconnect()


@pytest_twisted.inlineCallbacks
def test_guests_named_alike_while_redis_was_down_are_told_apart_after(served, redisPort, tmp_path):
    """
    Without Redis each instance only knows its own guests, so two get
    ~guest1; once it is back one keeps the name and the other gets a fresh
    one, with a *[server] event: names are unique again, in WHO too.
    """
    port, process = redisPort
    url = f"redis://127.0.0.1:{port}/0"
    a = RedisChat(url, reactor, instance="a", heartbeat=0.2)
    b = RedisChat(url, reactor, instance="b", heartbeat=0.2)
    for chat in (a, b):
        chat.startService()
    try:
        yield until(lambda: a.available and b.available, "Redis")
        stopRedis(process)
        yield until(lambda: not a.available and not b.available, "both to notice Redis is gone")
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=a), 1)
        two, twoT = yield guestOn(makeFilesFactory(served, reactor, chat=b), 2)
        restarted = yield startRedis(port, tmp_path)
        try:
            yield until(lambda: a.available and b.available, "both to reconnect")
            yield until(lambda: oneT.value() or twoT.value(), "one of them to be renamed")
            renamed, kept = (oneT, twoT) if oneT.value() else (twoT, oneT)
            assert lines(renamed) == [b"*[server]: ~guest1 is taken on another instance, you are now ~guest2."]
            for _ in range(3):  # a few more heartbeats of both: nobody else is renamed, nobody twice
                beats = (a._beat(), b._beat())
                for d in beats:
                    yield d
            assert kept.value() == b"" and len(lines(renamed)) == 1
            renamed.clear()
            one.dataReceived(b"WHO\r\n")
            yield until(lambda: oneT.value().endswith(b"~guest2\r\n"), "WHO")
            assert lines(oneT) == [b"#2 users online.", b"~guest1", b"~guest2"]
        finally:
            stopRedis(restarted)
    finally:
        for chat in (a, b):
            yield chat.stopService()


@pytest_twisted.inlineCallbacks
def test_redis_down_at_start(served, tmp_path):
    """The instance starts without Redis: logging in and files work, chat answers unavailable, then works once it is up."""
    port = freePort()
    a = RedisChat(f"redis://127.0.0.1:{port}/0", reactor, instance="a", heartbeat=0.2)
    a.startService()
    try:
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=a), 1)
        one.dataReceived(b"WHO\r\nNICK ada\r\nLIST docs\r\n")
        yield until(lambda: lines(oneT)[-1:] == [b"9 readme.txt"], "the listing")
        assert lines(oneT) == [
            b"!Chat is unavailable, try again later.", b"!Chat is unavailable, try again later.",
            b"#1 entries in docs.", b"9 readme.txt",
        ]
        process = yield startRedis(port, tmp_path)
        try:
            yield until(lambda: a.available, "the first connection, late")  # the backoff reaches it
            oneT.clear()
            one.dataReceived(b"WHO\r\n")
            yield until(lambda: oneT.value().endswith(b"~guest1\r\n"), "WHO")
            assert lines(oneT) == [b"#1 users online.", b"~guest1"]
        finally:
            stopRedis(process)
    finally:
        yield a.stopService()


@pytest_twisted.inlineCallbacks
def test_events_through_redis_wait_for_a_body_and_come_once(instances):
    a, b = instances
    one, oneT = yield guestOn(a, 1)
    two, twoT = yield guestOn(b, 2)
    two.dataReceived(b"FILE binary.bin\r\n")  # the body waits for the transport to pull it
    one.dataReceived(b"SAY one\r\nMSG ~guest2 two\r\n")
    yield until(lambda: len(two._events) == 2, "both events queued behind the body on b")
    yield until(lambda: lines(oneT) == [b"#Said.", b"#Sent to ~guest2."], "the replies on a")
    drainTransfer(twoT)
    body = bytes(range(256)) * 4
    assert twoT.value() == (
        b"#Sending binary.bin (1024 bytes).\r\n" + body + b"\r\n#File binary.bin sent successfully.\r\n"
        b"*~guest1: one\r\n*~guest1 (private): two\r\n"
    )


@pytest_twisted.inlineCallbacks
def test_a_slow_session_on_another_instance_stays_bounded(instances):
    a, b = instances
    one, oneT = yield guestOn(a, 1)
    two, twoT = yield guestOn(b, 2)
    two.pauseProducing()  # its client does not read
    count = 300
    one.dataReceived(b"".join(b"SAY message %d %s\r\n" % (i, b"x" * 500) for i in range(count)))
    yield until(lambda: oneT.value().count(b"#Said.\r\n") == count, "every SAY answered", )
    yield until(lambda: len(two._events) + two._events.dropped == count, "every event on b")
    assert twoT.value() == b""
    assert len(two._events) <= 100 and two._events.size <= 64 * 1024
    two.resumeProducing()
    got = lines(twoT)
    assert got[0].startswith(b"*[server]: ") and b"events dropped" in got[0]
    numbers = [int(line.split()[2]) for line in got[1:]]
    assert int(got[0].split()[1]) + len(numbers) == count
    assert numbers == sorted(set(numbers)) and numbers[-1] == count - 1  # in order, none twice
