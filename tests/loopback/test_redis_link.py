"""
--cluster URLs with a password, a user, TLS: parsed as redis URLs are, and
used against real redis-servers started here (--requirepass, an ACL user,
--tls-port).  The password never reaches a log line or an error message.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from echofile.redischat import RedisChat
from echofile.redislink import parseRedisURL
from echofile.redispenalties import RedisPenalties
from redishelpers import freePort, guestOn, lines, startRedis, stopRedis, tlsOptions, until
from support import makeFilesFactory

SECRET = "s3cr:t/p@ss"
QUOTED = "s3cr%3At%2Fp%40ss"


def test_password_and_user_in_the_url():
    a = parseRedisURL(f"redis://:{QUOTED}@10.0.0.5:6380/2")
    assert (a.host, a.port, a.db, a.tls, a.username, a.password) == ("10.0.0.5", 6380, 2, False, None, SECRET)
    a = parseRedisURL(f"redis://alice:{QUOTED}@redis.local")
    assert (a.host, a.port, a.db, a.username, a.password) == ("redis.local", 6379, 0, "alice", SECRET)
    a = parseRedisURL("rediss://redis.local:6390/1")
    assert (a.tls, a.port, a.password, a.caCerts) == (True, 6390, None, None)
    assert parseRedisURL("redis://:@h").password is None  # an empty password is none


def test_the_password_can_come_from_the_environment():
    """ECHOFILE_CLUSTER_PASSWORD keeps the password out of the command line (ps, shell history, unit files)."""
    environ = {"ECHOFILE_CLUSTER_PASSWORD": SECRET}
    a = parseRedisURL("rediss://redis.local:6390/1", environ)
    assert (a.username, a.password, str(a)) == (None, SECRET, "rediss://(password)@redis.local:6390/1")
    a = parseRedisURL("redis://alice@redis.local", environ)  # a user with the password from the environment
    assert (a.username, a.password) == ("alice", SECRET)
    assert parseRedisURL(f"redis://:{QUOTED}@h", {"ECHOFILE_CLUSTER_PASSWORD": "other"}).password == SECRET  # URL wins
    assert parseRedisURL("redis://h", {"ECHOFILE_CLUSTER_PASSWORD": ""}).password is None  # empty: none


def test_the_address_never_shows_the_password():
    a = parseRedisURL(f"rediss://alice:{QUOTED}@h:1/3")
    for text in (str(a), repr(a)):
        assert SECRET not in text and QUOTED not in text and "alice" not in text
    assert str(a) == "rediss://(password)@h:1/3"


@pytest.mark.parametrize("url", [
    f"redis://alice@h:1",                          # a user without a password
    f"redis://:{QUOTED}@h:1/db",                   # not a database number
    f"redis://:{QUOTED}@h:99999",                  # port out of range
    f"redis://:{QUOTED}@h:1/0?ssl_ca_certs=/etc/hostname",  # a CA file without TLS
    f"rediss://:{QUOTED}@h:1/0?ssl_ca_certs=/no/such/file",
    f"rediss://:{QUOTED}@h:1/0?timeout=1",
    f"http://:{QUOTED}@h:1",
    f"redis://:{QUOTED}@:1",
])
def test_bad_urls_are_refused_without_repeating_the_password(url):
    with pytest.raises(ValueError) as e:
        parseRedisURL(url)
    assert SECRET not in str(e.value) and QUOTED not in str(e.value)


@pytest.fixture
def redisWithPassword(tmp_path):
    port = freePort()
    process = pytest_twisted.blockon(startRedis(
        port, tmp_path, "--requirepass", SECRET, "--user", "alice", "on", ">alicepw", "~*", "&*", "+@all",
    ))
    yield port
    stopRedis(process)


@pytest_twisted.inlineCallbacks
def test_with_the_password_chat_and_penalties_work(served, redisWithPassword):
    port = redisWithPassword
    a = RedisChat(f"redis://:{QUOTED}@127.0.0.1:{port}/1", reactor, instance="a")
    b = RedisChat(f"redis://alice:alicepw@127.0.0.1:{port}/1", reactor, instance="b")  # an ACL user (Redis 6+)
    penalties = RedisPenalties(f"redis://:{QUOTED}@127.0.0.1:{port}/1", reactor, maxFailures=1)
    for service in (a, b, penalties):
        service.startService()
    try:
        yield until(lambda: a.available and b.available and penalties.available, "logged in to Redis")
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=a), 1)
        two, twoT = yield guestOn(makeFilesFactory(served, reactor, chat=b), 2)
        one.dataReceived(b"SAY hi\r\n")
        yield until(lambda: lines(twoT) == [b"*~guest1: hi"], "the SAY on the other instance")
        penalties.recordFailure("192.0.2.9")
        yield until(lambda: "192.0.2.9" in penalties._shared, "the lock-out heard back from Redis")
    finally:
        for service in (a, b, penalties):
            yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_a_wrong_password_is_logged_once_without_the_password(served, redisWithPassword, logged):
    port = redisWithPassword
    chat = RedisChat(f"redis://:wrong{QUOTED}@127.0.0.1:{port}/0", reactor, instance="a")
    bare = RedisChat(f"redis://127.0.0.1:{port}/0", reactor, instance="b")  # no password: NOAUTH
    for service in (chat, bare):
        service.startService()
    try:
        refused = lambda: [e for e in logged if "refused the connection" in e.get("log_format", "")]
        yield until(lambda: len(refused()) >= 2, "the refusals")
        assert not chat.available and not bare.available
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=chat), 1)
        one.dataReceived(b"WHO\r\n")
        yield until(lambda: lines(oneT) == [b"!Chat is unavailable, try again later."], "WHO")
        from twisted.logger import formatEvent

        text = "\n".join(formatEvent(e) for e in logged)
        assert SECRET not in text and QUOTED not in text
        assert "invalid username-password pair" in text or "WRONGPASS" in text
        assert "NOAUTH" in text
        assert len(refused()) == 2  # one per instance and outage, not one per connection or retry
    finally:
        for service in (chat, bare):
            yield service.stopService()


@pytest.fixture
def tlsRedis(tmp_path):
    port = freePort()
    options = tlsOptions(port, tmp_path)
    process = pytest_twisted.blockon(startRedis(port, tmp_path, *options, "--port", "0"))
    yield port, tmp_path / "redis-cert.pem"
    stopRedis(process)


@pytest_twisted.inlineCallbacks
def test_rediss_with_a_private_ca(served, tlsRedis, logged):
    port, ca = tlsRedis
    a = RedisChat(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", reactor, instance="a")
    b = RedisChat(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", reactor, instance="b")
    for service in (a, b):
        service.startService()
    try:
        yield until(lambda: a.available and b.available, "TLS connections to Redis")
        one, oneT = yield guestOn(makeFilesFactory(served, reactor, chat=a), 1)
        two, twoT = yield guestOn(makeFilesFactory(served, reactor, chat=b), 2)
        two.dataReceived(b"WHO\r\n")
        yield until(lambda: lines(twoT)[-1:] == [b"~guest2"], "WHO over TLS")
        assert lines(twoT) == [b"#2 users online.", b"~guest1", b"~guest2"]
    finally:
        for service in (a, b):
            yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_rediss_checks_the_certificate(served, tlsRedis):
    """Without the private CA, the self-signed certificate fails the check: never available."""
    port, _ = tlsRedis
    chat = RedisChat(f"rediss://127.0.0.1:{port}/0", reactor, instance="a")
    chat.startService()
    handshakes = []
    try:
        # Each failed attempt is a connection lost before it was ready; wait for a few.
        original = chat._link._connectionLost
        chat._link._connectionLost = lambda p: (handshakes.append(p), original(p))
        yield until(lambda: len(handshakes) >= 2, "failed TLS attempts")
        assert not chat.available
    finally:
        yield chat.stopService()
