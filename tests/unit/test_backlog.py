"""The listen backlog of echofile's endpoints (Twisted's default of 50 drops a burst's SYNs)."""

from __future__ import annotations

import os

import pytest
import twisted.test
from twisted.internet import endpoints
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor, MemoryReactorClock

from echofile.listening import DEFAULT_BACKLOG, withDefaultBacklog
from echofile.tap import Options, _listen, makeService

PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


def listened(description: str) -> MemoryReactor:
    """The reactor after echofile's listening service for C{description} started."""
    reactor = MemoryReactor()
    service = _listen(description, object(), reactor)
    service.startService()
    return reactor


@pytest.mark.parametrize(
    "description",
    ["tcp:8008:interface=127.0.0.1", "tcp6:8008", "haproxy:tcp:8008", r"tcp:8008:interface=\:\:1"],
)
def test_tcp_endpoints_listen_with_the_default_backlog(description):
    (port, _, backlog, _), = listened(description).tcpServers
    assert (port, backlog) == (8008, DEFAULT_BACKLOG)


def test_ssl_and_unix_endpoints_listen_with_the_default_backlog(tmp_path):
    assert listened(f"ssl:8443:privateKey={PEM}").sslServers[0][3] == DEFAULT_BACKLOG
    assert listened(f"unix:{tmp_path / 's'}").unixServers[0][2] == DEFAULT_BACKLOG


@pytest.mark.parametrize("description", ["tcp:8008:backlog=7", "haproxy:tcp:8008:backlog=7", "tcp:backlog=7:8008"])
def test_a_backlog_in_the_description_wins(description):
    assert listened(description).tcpServers[0][2] == 7


def test_endpoints_without_a_backlog_keep_their_description():
    def parse(description):
        parsed.append(description)
        if "backlog=" in description:
            serverFromString(MemoryReactor(), description)  # systemd: takes none: TypeError
        return description  # as written: no LISTEN_FDS here to adopt

    for description in ("systemd:domain=INET:index=0", "haproxy:systemd:domain=INET:index=0"):
        parsed = []
        assert withDefaultBacklog(description, parse) == description
        assert len(parsed) == 2


def parses(make) -> int:
    """How many endpoint descriptions Twisted parses while C{make()} runs (haproxy: is two: its own, the inner one)."""
    count = 0
    parseServer = endpoints._parseServer

    def counted(*args, **kwargs):
        nonlocal count
        count += 1
        return parseServer(*args, **kwargs)

    endpoints._parseServer = counted
    try:
        make()
    finally:
        endpoints._parseServer = parseServer
    return count


@pytest.mark.parametrize("description", [
    "tcp:8008:interface=127.0.0.1", "tcp:8008:backlog=7", "haproxy:tcp:8008", f"ssl:8443:privateKey={PEM}",
    f"haproxy:ssl:8443:privateKey={PEM}", "unix:/tmp/echofile-backlog.sock",
])
def test_a_listener_is_built_from_one_parse(description):
    """Not one to see whether the endpoint takes a backlog, then strports' own (for ssl:, the key file read twice)."""
    once = parses(lambda: serverFromString(MemoryReactor(), description))
    assert parses(lambda: _listen(description, object(), MemoryReactor())) == once



def test_the_default_endpoints_of_twistd_echofile_listen_with_it(served):
    options = Options()
    options.parseOptions(["--root", str(served)])
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    service.startService()
    try:
        assert [(port, backlog) for port, _, backlog, _ in reactor.tcpServers] == [
            (8007, DEFAULT_BACKLOG), (8008, DEFAULT_BACKLOG)]
    finally:
        service.stopService()
