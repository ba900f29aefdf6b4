"""
The one loopback harness: a real listening factory on 127.0.0.1, real TCP
clients (L{Collector}), and a teardown that waits for every disconnect.
"""

from __future__ import annotations

import hashlib
import os

import twisted.test

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet import ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

from echofile.tlslayer import fasterTLS


class Collector(Protocol):
    """
    Counts, hashes and (unless C{keep} is false: a body of hundreds of MB)
    keeps what arrives; waiters fire once the data satisfies them.
    """

    def __init__(self, keep: bool = True) -> None:
        self.data = bytearray()
        self.keep = keep
        self.hash = hashlib.sha256()
        self.count = 0
        self.head = b""  # the first 64 bytes, kept either way
        self.closed: Deferred[None] = Deferred()
        self._waiters: list[tuple[object, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        self.hash.update(data)
        self.count += len(data)
        if not self.keep:
            return
        self.data += data
        for waiter in self._waiters[:]:
            test, d = waiter
            if test(self.data):
                self._waiters.remove(waiter)
                d.callback(self.data)

    def until(self, test) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if test(self.data):
            d.callback(self.data)
        else:
            self._waiters.append((test, d))
        return d

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


class Server:
    """A listening factory and the connections made to it, torn down in full."""

    def __init__(self, factory, description: str = "tcp:0:interface=127.0.0.1") -> None:
        self.factory = factory
        self.description = description
        self.clients: list[Collector] = []

    @inlineCallbacks
    def start(self):
        self.port = yield serverFromString(reactor, self.description).listen(self.factory)
        return self

    @inlineCallbacks
    def connect(self, client: Collector | None = None):
        client = Collector() if client is None else client
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port), client)
        self.clients.append(client)
        return client

    @inlineCallbacks
    def stop(self):
        for client in self.clients:
            if not client.closed.called:
                client.transport.abortConnection()
            yield client.closed
        # Let the server side see its disconnects before the port goes.
        while self.factory.limiter.total:
            yield deferLaterTick()
        yield self.port.stopListening()


def deferLaterTick():
    return deferLater(reactor, 0.001, lambda: None)


#: Twisted's own test certificate and key (for TLS listeners in loopback tests).
SERVER_PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


class TLSServer(Server):
    @inlineCallbacks
    def start(self):
        # As twistd listens (echofile.tap): Twisted's TLS layer, with echofile.tlslayer's cheaper steps.
        self.port = yield fasterTLS(serverFromString(reactor, self.description)).listen(self.factory)
        return self

    @inlineCallbacks
    def connect(self):
        client = Collector()
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port, ssl.CertificateOptions())
        yield connectProtocol(endpoint, client)
        self.clients.append(client)
        return client
