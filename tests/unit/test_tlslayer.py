"""
Which listeners get echofile.tlslayer's TLS protocol: every C{ssl:} one
(also under C{haproxy:}), made by tap._listen; nothing else is touched.
"""

from __future__ import annotations

import os

import twisted.test
from twisted.internet import ssl
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory

from echofile.tap import _listen
from echofile.tlslayer import EchofileTLS, fasterTLS, useEchofileTLS
from echofile.twistedinternals import ListeningHook, serverTLSOptions

PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


def test_other_endpoints_are_left_as_they_are() -> None:
    reactor = MemoryReactor()
    for description in ("tcp:0", "haproxy:tcp:0", "unix:/tmp/echofile-test.sock"):
        endpoint = serverFromString(reactor, description)
        assert fasterTLS(endpoint) is endpoint, description


def test_ssl_endpoints_listen_through_the_hook() -> None:
    reactor = MemoryReactor()
    for description in (f"ssl:0:privateKey={PEM}", f"haproxy:ssl:0:privateKey={PEM}"):
        endpoint = serverFromString(reactor, description)
        wrapped = fasterTLS(endpoint)
        assert isinstance(wrapped, ListeningHook), description
        assert serverTLSOptions(wrapped) is serverTLSOptions(endpoint)  # resumeSessions still finds them


def test_tap_listens_on_ssl_with_the_hook() -> None:
    assert isinstance(_listen(f"ssl:0:privateKey={PEM}", Factory(), MemoryReactor()).endpoint, ListeningHook)
    assert not isinstance(_listen("tcp:0", Factory(), MemoryReactor()).endpoint, ListeningHook)


class _Port:
    def __init__(self, factory) -> None:
        self.factory = factory


def test_only_a_stock_tls_factory_is_switched() -> None:
    stock = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, Factory.forProtocol(Protocol))
    assert useEchofileTLS(_Port(stock)) and stock.protocol is EchofileTLS
    assert not useEchofileTLS(_Port(stock))  # already done
    other = TLSMemoryBIOFactory(ssl.CertificateOptions(), False, Factory.forProtocol(Protocol))
    other.protocol = type("Custom", (BufferingTLSTransport,), {})  # someone else's subclass: left alone
    assert not useEchofileTLS(_Port(other)) and other.protocol.__name__ == "Custom"
    assert not useEchofileTLS(_Port(Factory()))
