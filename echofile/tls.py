"""
What a session knows about the confidentiality of its connection.

The services get TLS from Twisted's own endpoints (``ssl:``, ``tls:``,
possibly under ``haproxy:``); nothing here sets TLS up.  This module only
answers "did that password just cross a network in clear text?", so that
the file service can warn the operator when it did.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.interfaces import IAddress, ISSLTransport, ITransport


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
