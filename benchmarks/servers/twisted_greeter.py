"""
The minimal Twisted *greeting* server the scale benchmark compares a files
session against: ``connectionMade -> transport.write(GREETING)``, then echo.

The minimal echo server says nothing on connect, so the client's "ready" is
only the kernel's handshake there; a files session is ready once its
greeting arrived, which needs an accept, a protocol and one send.
"""

import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402

GREETING = b"#Server Ready.\r\n"  # echofile.wire.GREETING, as the scale client expects it


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(GREETING)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1])
    reactor.listenTCP(port, Factory.forProtocol(Greeter), backlog=4096, interface="127.0.0.1")
    reactor.run()
