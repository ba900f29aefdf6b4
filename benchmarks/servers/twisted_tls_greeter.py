"""
The least a Twisted TLS server can do per connection, for the handshake
benchmark: an ``SSL4ServerEndpoint`` with the same certificate options an
``ssl:`` endpoint builds (session cache on, as echofile has it), a protocol
that writes one greeting line when the handshake is done, and nothing else
(no admission, no session state, no logging).  The gap between it and
``openssl s_server`` is Twisted's TLS layer.  With ``echofile-tls`` it
listens as echofile does (``echofile.tlslayer.fasterTLS``: Twisted's TLS
layer with echofile's cheaper steps); the gap between echofile and that
one is echofile's files session.

    python twisted_tls_greeter.py PORT CERT.pem [echofile-tls]
"""

import sys

from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer


@implementer(IHandshakeListener)
class Greeter(Protocol):
    def handshakeCompleted(self) -> None:
        self.transport.write(b"#Server Ready.\r\n")


def main(port: int, pem: str, echofileTLS: bool = False) -> None:
    with open(pem, "rb") as f:
        certificate = ssl.PrivateCertificate.loadPEM(f.read())
    options = ssl.CertificateOptions(privateKey=certificate.privateKey.original, certificate=certificate.original,
                                     enableSessions=True)
    endpoint = SSL4ServerEndpoint(reactor, port, options, backlog=4096, interface="127.0.0.1")
    if echofileTLS:
        from echofile.tlslayer import fasterTLS

        endpoint = fasterTLS(endpoint)
    endpoint.listen(Factory.forProtocol(Greeter))
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3:4] == ["echofile-tls"])
