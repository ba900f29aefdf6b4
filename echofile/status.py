"""
``--metrics ENDPOINT``: a small twisted.web site with two pages for operators.

- ``/metrics``: L{echofile.metrics.REGISTRY} in the Prometheus text format,
  rendered by prometheus-client's own Twisted resource (a WSGI app in the
  reactor's thread pool), never by hand.
- ``/healthz``: ``200 ok`` while the server is serving, ``503 draining``
  once a graceful shutdown began, so that a load balancer (HAProxy
  ``option httpchk``) or an orchestrator's probe stops sending new clients
  before the listeners go away.

The listener outlives the other listeners: twistd stops every service at
once on SIGTERM, so L{AfterDrain} keeps it until the drain is over, and
``/healthz`` answers 503 for the whole drain instead of refusing
connections.

The site logs no access lines and no ``Starting factory`` noise: a health
check every two seconds must not fill the log.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client.twisted import MetricsResource
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import WrappingFactory
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from echofile.metrics import REGISTRY


class HealthResource(Resource):
    """
    @param draining: tells whether a graceful shutdown has begun.
    """

    isLeaf = True

    def __init__(self, draining: Callable[[], bool]) -> None:
        super().__init__()
        self._draining = draining

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self._draining():
            request.setResponseCode(503)
            return b"draining\n"
        return b"ok\n"

    def render_HEAD(self, request: Request) -> bytes:
        """
        The same answer without its body.  Without this, twisted.web answers
        HEAD through GET and logs a line per request, the request's URI in
        it (a balancer's check every few seconds; any text after /healthz/).
        """
        body = self.render_GET(request)
        request.setHeader(b"content-length", b"%d" % len(body))
        return b""


class StatusRoot(Resource):
    """
    The site's root: its two pages, and for every other path (``/`` too)
    twisted.web's escaping 404 page.  The default (C{Resource}'s
    C{NoResource}) returns its body even to HEAD, and twisted.web then logs
    "HEAD request <Request ... uri=...> is returning a message body" for
    each request, the client's whole URI (up to 16 KB) in it, unbudgeted.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


class StatusSite(Site):
    """A Site that writes no access log and does not announce itself."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


class AfterDrain(MultiService):
    """
    Services (the ``--metrics`` listener) that stop only once the drain is over.

    @param drained: returns a Deferred that fires when the drain is over
        (L{echofile.shutdown.GracefulShutdown.whenDrained}).
    """

    def __init__(self, drained: Callable[[], Deferred[None]]) -> None:
        super().__init__()
        self._drained = drained

    def stopService(self) -> Deferred[object]:
        d = self._drained()
        return d.addCallback(lambda _: MultiService.stopService(self))


#: Connections the status endpoint serves at once; it is for a scraper and a balancer, not for the public.
MAX_STATUS_CONNECTIONS = 16
#: Seconds a status connection may take to send its request.
STATUS_REQUEST_TIMEOUT = 10


class CappedFactory(WrappingFactory):
    """
    At most C{maxConnections} connections at once; more are closed at once.

    Without it, anyone who reaches the endpoint can hold one descriptor per
    half-sent request for twisted.web's request timeout, and run the whole
    process (the file service included) out of descriptors.
    """

    noisy = False

    def __init__(self, wrappedFactory: Site, maxConnections: int) -> None:
        super().__init__(wrappedFactory)
        self.maxConnections = maxConnections

    def logPrefix(self) -> str:
        return self.wrappedFactory.logPrefix()

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        if len(self.protocols) >= self.maxConnections:
            return None
        return super().buildProtocol(addr)


def makeStatusSite(draining: Callable[[], bool], maxConnections: int = MAX_STATUS_CONNECTIONS) -> CappedFactory:
    """The site behind ``--metrics``: ``/metrics`` and ``/healthz``, for at most C{maxConnections} at once."""
    root = StatusRoot()
    root.putChild(b"metrics", MetricsResource(REGISTRY))
    root.putChild(b"healthz", HealthResource(draining))
    site = StatusSite(root)
    site.timeOut = STATUS_REQUEST_TIMEOUT
    return CappedFactory(site, maxConnections)
