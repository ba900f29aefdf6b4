"""
Sessions behind a load balancer speaking the PROXY protocol (``haproxy:``
endpoints).

Twisted's ``haproxy:`` endpoint wraps each connection in
C{HAProxyProtocolWrapper}, which reads the PROXY header (v1 or v2) and then
answers C{getPeer()} with the client address from it.  But the wrapper
connects our protocol at once, before any byte arrived: in
C{connectionMade}, C{getPeer()} is still the balancer.  A session that
admits, logs and greets there would count every client against the
balancer's address and greet before the header was even read.

L{whenPeerKnown} is what C{connectionMade} waits on instead: a Deferred
that fires, with the address to admit and log, at once for any other
transport, and for the wrapper once its header has been parsed.  Bytes that
arrive with or after the header are held until the session has started,
then handed over in order.  A header that never comes ends the connection
after a timeout; a connection that closes first never fires the Deferred
(the protocol's C{connectionLost} runs as usual).

Health checks: a ``LOCAL`` (v2) or ``UNKNOWN`` (v1) header carries no client
address.  Such a connection gets a L{HealthCheck} peer whose L{peerKey} is
unique to the connection, so checks are never counted against the
balancer's (or anyone's) address, and logs say what they are.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile.limits import addressKey, cancelPending

try:
    # Private in Twisted: the class behind the public proxyEndpoint / haproxy: endpoint.
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
except ImportError:  # pragma: no cover - a Twisted without PROXY support
    HAProxyProtocolWrapper = None  # type: ignore[assignment,misc]

_log = Logger(namespace="echofile.proxy")


@implementer(IAddress)
class HealthCheck:
    """
    The peer of a connection whose PROXY header names no client
    (``LOCAL``/``UNKNOWN``): a balancer checking that we are alive.

    @ivar balancer: the address the connection really comes from.
    """

    def __init__(self, balancer: IAddress) -> None:
        self.balancer = balancer

    def __repr__(self) -> str:
        return f"HealthCheck({self.balancer!r})"


def peerKey(address: IAddress) -> str:
    """
    The per-address counting (and logging) key of a session's peer.

    An IP address in its canonical spelling.  A health check's key names the
    balancer's connection (host and port), so that it is unique: it never
    shares a per-address slot with clients.
    """
    if isinstance(address, HealthCheck):
        balancer = address.balancer
        return f"health-check from {peerKey(balancer)}:{getattr(balancer, 'port', '')}"
    key = addressKey(address)
    try:
        # Twisted spells IPv6 from a v2 header in full (2001:db8:0:0:0:0:0:7): one
        # client must get one key however it reached us.
        return str(ipaddress.ip_address(key))
    except ValueError:
        return key


def isProxyWrapper(transport: object) -> bool:
    """Is C{transport} Twisted's PROXY protocol wrapper (a C{haproxy:} endpoint)?"""
    return HAProxyProtocolWrapper is not None and isinstance(transport, HAProxyProtocolWrapper)


def whenPeerKnown(transport: ITransport, clock: IReactorTime, timeout: float | None) -> Deferred[IAddress]:
    """
    A Deferred that fires with the peer address once it is known: now for
    an ordinary transport, after the PROXY header for a C{haproxy:} one.

    Call it from C{connectionMade} and start the session in its callback.
    Data the wrapper passes on before the callback ran is delivered to the
    protocol right after it.

    @param timeout: seconds the balancer has to send the header before the
        connection is aborted; None waits forever.
    """
    if not isProxyWrapper(transport):
        return succeed(transport.getPeer())
    if transport._proxyInfo is not None:
        return succeed(_peerFrom(transport))
    return _HeaderWait(transport, clock, timeout).deferred


def _peerFrom(wrapper: Any) -> IAddress:
    info = wrapper._proxyInfo
    if info.source is None:  # LOCAL / UNKNOWN: the balancer itself
        return HealthCheck(wrapper.transport.getPeer())
    return info.source


class _HeaderWait:
    """
    Stands in for the session as the wrapper's C{wrappedProtocol} until the
    header is parsed, holding whatever the wrapper passes on meanwhile, and
    watches the wrapper's C{dataReceived} for the moment the header is done.
    """

    def __init__(self, wrapper: Any, clock: IReactorTime, timeout: float | None) -> None:
        self._wrapper = wrapper
        self._protocol = wrapper.wrappedProtocol
        self._held: list[bytes] = []
        self._waiting = True
        self.deferred: Deferred[IAddress] = Deferred()
        self._parse = wrapper.dataReceived
        wrapper.wrappedProtocol = self
        wrapper.dataReceived = self._wrapperDataReceived  # shadows the method on this instance only
        self._timeout = timeout
        self._timer: IDelayedCall | None = None
        if timeout is not None:
            self._timer = clock.callLater(timeout, self._timedOut)

    # -- the wrapper's side ---------------------------------------------------

    def _wrapperDataReceived(self, data: bytes) -> None:
        self._parse(data)
        if self._waiting and self._wrapper._proxyInfo is not None and self._wrapper.wrappedProtocol is self:
            self._stopWaiting()
            self.deferred.callback(_peerFrom(self._wrapper))
            held, self._held = self._held, []
            for chunk in held:
                if self._closing():
                    break  # refused (busy) or ended: a closing transport reads nothing more
                self._protocol.dataReceived(chunk)

    def _closing(self) -> bool:
        return bool(self._wrapper.disconnecting or getattr(self._wrapper.transport, "disconnecting", False))

    def _timedOut(self) -> None:
        self._timer = None
        _log.info(
            "no PROXY protocol header from {balancer} in {timeout}s, closing",
            balancer=self._wrapper.transport.getPeer(), timeout=self._timeout,
        )
        self._wrapper.transport.abortConnection()

    def _stopWaiting(self) -> None:
        self._waiting = False
        cancelPending(self._timer)
        self._timer = None
        self._wrapper.wrappedProtocol = self._protocol
        del self._wrapper.dataReceived  # back to the class's method

    # -- what the wrapper calls on its wrapped protocol meanwhile -------------

    def dataReceived(self, data: bytes) -> None:
        self._held.append(data)

    def connectionLost(self, reason: Failure) -> None:
        """Closed before the header was complete: the session ends without starting."""
        if self._waiting:
            self._stopWaiting()
        self._protocol.connectionLost(reason)

    def logPrefix(self) -> str:
        prefix = getattr(self._protocol, "logPrefix", None)
        return prefix() if callable(prefix) else type(self._protocol).__name__
