"""The minimal Twisted echo server the benchmark compares against: ``dataReceived -> transport.write``."""

import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1])
    reactor.listenTCP(port, Factory.forProtocol(Echo), backlog=4096, interface="127.0.0.1")
    reactor.run()
