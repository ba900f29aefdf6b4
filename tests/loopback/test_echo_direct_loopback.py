"""The lean echo path on real 127.0.0.1 connections: direct writes, a peer that stops reading, half-close."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.task import deferLater

from echofile.echo import EchoFactory
from echofile.limits import ConnectionLimiter
from loopbackhelpers import Collector


def tick():
    return deferLater(reactor, 0.001, lambda: None)


@pytest.fixture
def echo():
    factory = EchoFactory(reactor, ConnectionLimiter(100, 100, "echo"), 300.0)
    port = pytest_twisted.blockon(serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory))
    clients: list[Collector] = []

    @inlineCallbacks
    def connect():
        client = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        clients.append(client)
        for _ in range(1000):  # until the server side has admitted it
            if factory.limiter.total == len(clients):
                break
            yield tick()
        return client

    yield factory, connect

    @inlineCallbacks
    def stop():
        for client in clients:
            if not client.closed.called:
                client.transport.abortConnection()
            yield client.closed
        while factory.limiter.total:
            yield tick()
        yield port.stopListening()

    pytest_twisted.blockon(stop())


def serverSession(factory):
    (session,) = list(factory.sessions.sessions)
    return session


@pytest_twisted.inlineCallbacks
def test_small_messages_go_straight_to_the_socket(echo):
    factory, connect = echo
    client = yield connect()
    session = serverSession(factory)
    assert session._socket is not None  # plain TCP: the direct path is on
    writes = []
    original = session.transport.startWriting
    session.transport.startWriting = lambda: (writes.append(1), original())
    for i in range(50):
        message = b"%d:" % i + os.urandom(100)
        client.transport.write(message)
        while not client.data.endswith(message):
            yield tick()
    assert writes == []  # no message needed the reactor to report the socket writable


@pytest_twisted.inlineCallbacks
def test_peer_not_reading_then_reading_gets_everything_in_order(echo):
    factory, connect = echo
    client = yield connect()
    client.transport.pauseProducing()
    payload = os.urandom(6 * 1024 * 1024)
    for offset in range(0, len(payload), 65536):
        client.transport.write(payload[offset : offset + 65536])
    session = serverSession(factory)
    for _ in range(3000):  # until the server stopped reading from us
        yield tick()
        if session.transport.producerPaused:
            break
    assert session.transport.producerPaused
    assert len(session.transport.dataBuffer) + session.transport._tempDataLen < 1024 * 1024
    client.transport.resumeProducing()
    while len(client.data) < len(payload):
        yield tick()
    assert client.data == payload


@pytest_twisted.inlineCallbacks
def test_half_close_returns_everything_then_closes(echo):
    factory, connect = echo
    client = yield connect()
    payload = os.urandom(3 * 1024 * 1024)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    yield client.closed
    assert client.data == payload
