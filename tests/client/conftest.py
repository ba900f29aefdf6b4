"""Client fixtures: the real file server on loopback, scripted fake servers."""

from __future__ import annotations

from typing import Callable

import pytest
import pytest_twisted
from clienthelpers import ALICE_PASSWORD, TIMEOUT, Listening, Scripted, feed
from echofile.client import FileClient
from support import makeFilesFactory
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport


@pytest.fixture
def fileServer(served):
    """The real file service on loopback, on the real reactor, with an account alice besides the default one."""
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=ALICE_PASSWORD.encode())
    server = Listening(makeFilesFactory(served, reactor, checkers=[checker], authFailureDelay=0.05))
    pytest_twisted.blockon(server.start())
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def fakeServer():
    """Call with a script; fires with a listening fake server, stopped at teardown."""
    servers: list[Listening] = []

    def start(script: Callable[[bytes, object], None], knowsHash: bool = False) -> Deferred[Listening]:
        server = Listening(Factory.forProtocol(lambda: Scripted(script, knowsHash)))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.port is not None:
            pytest_twisted.blockon(server.stop())


# -- a FileClient on a StringTransport and a fake clock --------------------------------

@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def client(clock, events):
    protocol = FileClient(clock, TIMEOUT, onEvent=events.append)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


@pytest.fixture
def ready(client):
    protocol, transport = client
    feed(protocol, b"#Server Ready.\r\n")
    return protocol, transport
