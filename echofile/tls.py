"""
Sessions over TLS.

The services get TLS from Twisted's own endpoints (``ssl:``, ``tls:``);
nothing here sets TLS up.  This module answers two questions for the file
session:

- B{when may it greet?}  Only once the handshake is done (L{TLSHandshake}).
  A greeting written earlier is buffered by Twisted's TLS layer, which then
  pauses the session as a producer; the session, as it must to bound its
  memory, pauses reading from the transport in turn, so the client's
  handshake bytes are never read and the handshake never completes.
  Waiting also gives a stalled handshake (or a plaintext client on the TLS
  port) a deadline of its own.
- B{did that password just cross a network in clear text?}
  (L{cleartextOverNetwork}), so that the operator is warned when it did.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ISSLTransport, ITransport
from twisted.logger import Logger

from echofile.limits import cancelPending
from echofile.proxy import isProxyWrapper

_log = Logger(namespace="echofile.tls")


def isLoopback(address: IAddress) -> bool:
    """
    Is C{address} on this host: a loopback IP (IPv4, IPv6, or IPv4 mapped in
    IPv6), or not an IP address at all (a UNIX socket, a pipe)?
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def cleartextOverNetwork(transport: ITransport, peer: IAddress) -> bool:
    """
    True when what C{peer} sends on C{transport} crossed a network unencrypted:
    the transport is not TLS and the peer is not on this host.

    Behind a PROXY-protocol balancer C{peer} is the client from the header,
    and the transport is TLS only if the balancer-to-server leg is; a
    balancer that terminates TLS itself therefore still draws the warning
    (the server cannot know what the client's leg was).
    """
    return not ISSLTransport.providedBy(transport) and not isLoopback(peer)


def awaitsHandshake(transport: ITransport) -> bool:
    """Must a session on C{transport} wait for a TLS handshake before it speaks?"""
    return ISSLTransport.providedBy(transport) and not isProxyWrapper(transport)


class TLSHandshake:
    """
    Waits for the TLS handshake of a session's connection.

    C{done} fires (with None) at once when the transport is not TLS, else
    when the protocol -- which must provide C{IHandshakeListener} -- passes
    its C{handshakeCompleted} call on to L{completed}.  A handshake not done
    within C{timeout} seconds aborts the connection; call L{cancel} from
    C{connectionLost}.

    Behind Twisted's PROXY wrapper the session is not the TLS layer's
    protocol and is never told about the handshake; it waits for the header
    instead (L{echofile.proxy.whenPeerKnown}), which can only arrive once
    the handshake is done.  Such a transport counts as ready here.
    """

    def __init__(self, transport: ITransport, clock: IReactorTime, timeout: float | None) -> None:
        self.done: Deferred[None] = Deferred()
        self._transport = transport
        self._timeout = timeout
        self._timer: IDelayedCall | None = None
        if not awaitsHandshake(transport):
            self.done.callback(None)
        elif timeout is not None:
            self._timer = clock.callLater(timeout, self._timedOut)

    def completed(self) -> None:
        """The handshake is done (the protocol's C{handshakeCompleted})."""
        self.cancel()
        if not self.done.called:
            self.done.callback(None)

    def cancel(self) -> None:
        """Stop the deadline (the connection is gone, or the handshake done)."""
        timer, self._timer = self._timer, None
        cancelPending(timer)

    def _timedOut(self) -> None:
        self._timer = None
        _log.info(
            "TLS handshake with {peer} not done in {timeout}s, closing",
            peer=self._transport.getPeer(), timeout=self._timeout,
        )
        self._transport.abortConnection()
