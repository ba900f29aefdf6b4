"""--cluster: the service tree gets a RedisChat (shared with the realm and the factory) instead of the in-process chat."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from echofile.chat import ChatService
from echofile.lockout import LoginPenalties
from echofile.redischat import RedisChat
from echofile.redispenalties import RedisPenalties
from echofile.tap import Options, makeService


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def filesFactory(service):
    listening = [s for s in service if hasattr(s, "factory") and hasattr(s.factory, "portal")]
    return listening[0].factory


def test_without_cluster_chat_is_in_process(served):
    service = makeService(parse("--root", str(served)), reactor=MemoryReactorClock(), environ={"ECHOFILE_PASSWORD": "pw"})
    chat = service.getServiceNamed("chat")
    assert type(chat) is ChatService
    assert type(filesFactory(service).penalties) is LoginPenalties
    assert filesFactory(service).chat is chat is filesFactory(service).portal.realm.chat


def test_cluster_uses_redis_for_chat(served):
    options = parse("--root", str(served), "--cluster", "redis://127.0.0.1:6390/3")
    service = makeService(options, reactor=MemoryReactorClock(), environ={"ECHOFILE_PASSWORD": "pw"})
    chat = service.getServiceNamed("chat")
    assert isinstance(chat, RedisChat) and (chat._host, chat._port, chat._db) == ("127.0.0.1", 6390, 3)
    assert filesFactory(service).chat is chat is filesFactory(service).portal.realm.chat
    penalties = service.getServiceNamed("penalties")
    assert isinstance(penalties, RedisPenalties) and filesFactory(service).penalties is penalties
    assert (penalties.maxFailures, penalties.window, penalties.duration) == (10, 600.0, 600.0)


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "http://127.0.0.1:6379", "redis://127.0.0.1:6379/x"])
def test_bad_cluster_url_is_a_usage_error(served, url):
    with pytest.raises(usage.UsageError, match="--cluster"):
        parse("--root", str(served), "--cluster", url)


def test_cluster_takes_a_password_and_tls(served):
    options = parse("--root", str(served), "--cluster", "rediss://alice:pw%40x@10.0.0.5:6390/1")
    service = makeService(options, reactor=MemoryReactorClock(), environ={"ECHOFILE_PASSWORD": "pw"})
    for name in ("chat", "penalties"):
        address = service.getServiceNamed(name).address
        assert (address.tls, address.username, address.password, address.db) == (True, "alice", "pw@x", 1)


@pytest.mark.parametrize("url", ["redis://alice@h:1", "redis://:hunter2@h:1/x", "rediss://:hunter2@h:1?ssl_ca_certs=/nope"])
def test_a_bad_cluster_url_never_repeats_its_password(served, url):
    with pytest.raises(usage.UsageError, match="--cluster") as e:
        parse("--root", str(served), "--cluster", url)
    assert "hunter2" not in str(e.value)
