"""
What a peer is called: one key per client, for the connection caps, the
login penalties and their exemptions, the trusted-proxy check and the logs.

Every one of them asks L{peerKey} (an address) or L{socketKey} (the
connection's own socket peer), so a client has one name everywhere:

- an IP address in its canonical spelling, with an IPv4-mapped IPv6 address
  (``::ffff:127.0.0.1``, what a dual-stack ``tcp6:`` listener reports for an
  IPv4 client) written as the IPv4 address it is;
- on a UNIX socket, the peer's user (``uid:1000``, from ``SO_PEERCRED``):
  the socket's address is the same for every local user, so keying by it
  would let one user's failed logins lock out all the others;
- a PROXY health check (L{HealthCheck}) as the balancer it comes from.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Iterable, Union

from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from zope.interface import implementer

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The networks of this host's loopback interface: the default --trusted-proxy.
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

#: The key of a UNIX-socket peer whose user cannot be learnt (no SO_PEERCRED on
#: this platform, or a transport without a socket): all such peers share it.
UNIX_FALLBACK_KEY = "unix"

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@implementer(IAddress)
class HealthCheck:
    """
    The peer of a connection whose PROXY header names no client
    (``LOCAL``/``UNKNOWN``): a balancer checking that we are alive.  It is
    counted, and logged, as the balancer.

    @ivar balancer: the address the connection really comes from.
    """

    def __init__(self, balancer: IAddress) -> None:
        self.balancer = balancer

    def __repr__(self) -> str:
        return f"HealthCheck({self.balancer!r})"


def parseIP(text: str) -> IP | None:
    """
    C{text} as an IP address, an IPv4-mapped IPv6 address as the IPv4
    address it maps; None when it is not one.
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def parseNetwork(value: str) -> Network:
    """
    An address or network (``10.0.0.0/8``, ``::1``) for an option; an
    IPv4-mapped IPv6 network (``::ffff:127.0.0.0/104``) becomes the IPv4
    network it maps, so it matches the keys L{peerKey} makes.

    @raise ValueError: not an address or network.
    """
    network = ipaddress.ip_network(value.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        first = network.network_address.ipv4_mapped
        assert first is not None
        return ipaddress.ip_network(f"{first}/{network.prefixlen - 96}")
    return network


def normalizeKey(key: str) -> str:
    """A key (or host) in its canonical spelling: an IP address as L{parseIP} writes it; anything else as is."""
    ip = parseIP(key)
    return key if ip is None else str(ip)


def inNetworks(key: str, networks: Iterable[Network]) -> bool:
    """Is the peer called C{key} an IP address inside one of C{networks}?"""
    ip = parseIP(key)
    return ip is not None and any(ip in network for network in networks)


def peerKey(address: IAddress | None) -> str:
    """The key of a peer known by its address (the module docstring says which)."""
    if isinstance(address, HealthCheck):
        return peerKey(address.balancer)
    if isinstance(address, UNIXAddress):
        return UNIX_FALLBACK_KEY
    host = getattr(address, "host", None)
    if isinstance(host, str):
        return normalizeKey(host)
    return type(address).__name__


def socketKey(transport: object) -> str:
    """
    The key of a connection's own socket peer, below any TLS or PROXY
    wrapper: its IP address, or on a UNIX socket its user (``uid:N``).
    """
    return socketPeerKey(transport)[1]


def socketPeerKey(transport: object) -> tuple[IAddress, str]:
    """L{socketPeer} and L{socketKey} of C{transport}, from one C{getPeer} (an address object per call)."""
    inner = _socketTransport(transport)
    peer = inner.getPeer()  # type: ignore[attr-defined]
    return peer, _keyOf(inner, peer)


def _keyOf(inner: object, peer: IAddress) -> str:
    if type(peer) is IPv4Address and isinstance(inner, tcp.Connection):
        # The kernel wrote it (accept's inet_ntoa): already the canonical
        # spelling, so no ipaddress parse per accept.
        return peer.host
    if isinstance(peer, UNIXAddress):
        uid = peerUid(getattr(inner, "socket", None))
        return UNIX_FALLBACK_KEY if uid is None else f"uid:{uid}"
    return peerKey(peer)


def socketPeer(transport: object) -> IAddress:
    """The address of a connection's own socket peer, below any TLS or PROXY wrapper."""
    return _socketTransport(transport).getPeer()  # type: ignore[attr-defined]


def peerUid(sock: object) -> int | None:
    """The user id of the process at the other end of a UNIX socket, if the platform tells."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or not isinstance(sock, socket.socket) or sock.family != socket.AF_UNIX:
        return None
    try:
        _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size))
    except (OSError, struct.error):
        return None
    return uid


def isValidClient(address: object) -> bool:
    """
    Is C{address} (from a PROXY header) a real client address: an IPv4 or
    IPv6 address of its own family (IPv4-mapped allowed in IPv6), without a
    scope, and a port in 0-65535?  Twisted's v1 parser takes any text
    (``not-an-ip``, escape sequences) and any integer as the port.
    """
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return False
    host, port = address.host, address.port
    if not isinstance(host, str) or "%" in host or not isinstance(port, int) or not 0 <= port <= 65535:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == (4 if isinstance(address, IPv4Address) else 6)


def _socketTransport(transport: object) -> object:
    """
    Follow C{.transport} through protocol wrappers (TLS, PROXY) down to the
    transport that owns the socket.  (Not by looking for a C{socket}
    attribute: a wrapper hands unknown attributes on to its transport, while
    its own C{getPeer} answers with the PROXY header's address.)
    """
    inner = transport
    for _ in range(8):  # a TLS layer inside a PROXY wrapper is two; never a cycle
        below = getattr(inner, "transport", None)
        if below is None:
            break
        inner = below
    return inner
