"""
Sessions over TLS.

The services get TLS from Twisted's own endpoints (``ssl:``, ``tls:``).
The one thing changed in what they set up is session resumption
(L{resumeSessions}).  This module also answers two questions for the file
session:

- B{must it wait before it speaks?}  Over TLS, until the handshake is done
  (L{awaitsHandshake}; the wait itself, with its deadline, is
  L{echofile.admission}'s).  A greeting written earlier is buffered by
  Twisted's TLS layer, which then pauses the session as a producer; the
  session, as it must to bound its memory, pauses reading from the
  transport in turn, so the client's handshake bytes are never read and
  the handshake never completes.
- B{did that password just cross a network in clear text?}
  (L{cleartextOverNetwork}), so that the operator is warned when it did.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, ISSLTransport, ITransport

from echofile.addresses import parseIP
from echofile.proxy import isProxyWrapper
from echofile.twistedinternals import serverTLSOptions

try:
    from OpenSSL.SSL import SESS_CACHE_SERVER
except ImportError:  # pragma: no cover - no pyOpenSSL, so no TLS endpoints either
    SESS_CACHE_SERVER = None


def resumeSessions(endpoint: object) -> bool:
    """
    Let clients of an C{ssl:} endpoint (also under C{haproxy:}) resume their
    TLS sessions: True if it is one, and resumption is now on.

    Twisted's C{CertificateOptions} turn OpenSSL's session cache off and
    send no stateless tickets unless told, and its C{ssl:} parser cannot
    tell them: every reconnect paid a full handshake (a private-key
    operation on the server).  This turns the server-side cache on in the
    endpoint's one shared context: TLS 1.2 clients resume by session ID,
    TLS 1.3 clients with the (stateful, reusable, no 0-RTT) tickets the server then
    issues.  Sessions stay in this process's memory (OpenSSL's default
    bounds: 20,480 sessions, 2 hours) and never reach a disk or another
    instance.  Stateless tickets stay off, as Twisted has them: their key
    would live as long as the process.
    """
    options = serverTLSOptions(endpoint)
    getContext = getattr(options, "getContext", None)
    if getContext is None or SESS_CACHE_SERVER is None:
        return False
    getContext().set_session_cache_mode(SESS_CACHE_SERVER)  # the context every connection is made from
    return True


def isLoopback(address: IAddress) -> bool:
    """
    Is C{address} on this host: a loopback IP (IPv4, IPv6, or IPv4 mapped in
    IPv6), or not an IP address at all (a UNIX socket, a pipe)?
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return True
    ip = parseIP(host)
    return ip is not None and ip.is_loopback


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
    """
    Must a session on C{transport} wait for a TLS handshake before it speaks?

    Behind Twisted's PROXY wrapper the session is not the TLS layer's
    protocol and is never told about the handshake; it waits for the header
    instead, which can only arrive once the handshake is done.
    """
    return ISSLTransport.providedBy(transport) and not isProxyWrapper(transport)
