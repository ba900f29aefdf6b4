"""
A connection from the moment it is accepted until its session may speak.

A TLS handshake that never finishes, or a PROXY header that never comes,
holds a file descriptor as surely as a session does.  So every connection
takes a slot in its service's caps (--max-connections, --max-per-ip) in
C{connectionMade}, counted by its socket's own peer (L{socketKey}); once the
PROXY header names the client, the slot moves to the client's address and is
checked against that address's cap.  A connection that is not ready (TLS
handshake done, header in) within the deadline (--login-timeout) is aborted.
Before it is ready nothing can be said to it (not in clear text over TLS,
not to a balancer before its header), so a connection refused then is
closed without a word; once ready, the session says why (C{onBusy}).

On a C{haproxy:} endpoint the header is believed only from a trusted
socket peer (--trusted-proxy, loopback by default; a UNIX-socket peer is
local and trusted, the socket file's mode says who may connect): anyone
else could pick the address they are counted and locked out as.
"""

from __future__ import annotations

from typing import Callable, Iterable

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import Logger, LogLevel

from echofile.addresses import LOOPBACK, Network, inNetworks, peerKey, socketKey, socketPeer, socketPeerKey
from echofile import metrics
from echofile.eventlog import peerText
from echofile.limits import ConnectionLimiter, cancelPending
from echofile.proxy import closeUnread, isProxyWrapper, whenPeerKnown
from echofile.tls import awaitsHandshake

_log = Logger(namespace="echofile.admission")


class AdmissionPolicy:
    """
    What a service's connections are admitted by (one per service).

    @param deadline: seconds a connection has to become ready; None: no limit.
    @param trustedProxies: socket peers whose PROXY headers are believed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        limiter: ConnectionLimiter,
        deadline: float | None = 60.0,
        trustedProxies: Iterable[Network] = LOOPBACK,
    ) -> None:
        self.clock = clock
        self.limiter = limiter
        self.deadline = deadline
        self.trustedProxies = tuple(trustedProxies)
        # The service's child of the per-session counter, looked up once:
        # C{labels()} costs a lock and a dict lookup per call.
        self.accepted = metrics.CONNECTIONS_ACCEPTED.labels(service=limiter.service)
        #: The service's echofile_sessions_open, counted without a lock (L{metrics.OpenSessions}).
        self.sessionsOpen = metrics.openSessions(limiter.service)

    def trusts(self, transport: ITransport) -> bool:
        """May the socket peer of C{transport} tell us who the client is?"""
        if isinstance(socketPeer(transport), UNIXAddress):
            return True
        return inNetworks(socketKey(transport), self.trustedProxies)


class Admission:
    """
    One connection's slot in its service's caps, and the wait until it may speak.

    @ivar key: the key whose slot the connection holds (its socket peer's,
        then the client's from the PROXY header), or None when it holds none.
    @ivar peer: how the log names the connection's peer (L{peerText}): its
        socket peer, then the client the PROXY header named, via the balancer.
    """

    __slots__ = (
        "_policy", "_transport", "_onReady", "_onBusy", "_timer", "_started", "_handshaking", "_open", "key", "peer",
    )

    def __init__(
        self,
        policy: AdmissionPolicy,
        transport: ITransport,
        onReady: Callable[[IAddress, str], None],
        onBusy: Callable[[], None],
    ) -> None:
        """
        @param onReady: called with the client's address and key once the
            connection is ready and admitted.
        @param onBusy: called when a ready connection is over a cap: it can
            be told so (the session's own refusal).
        """
        self._policy = policy
        self._transport = transport
        # Let go of once the connection is a session (L{_ready}): an idle
        # session would otherwise keep both (a bound method, a closure) for its life.
        self._onReady: Callable[[IAddress, str], None] | None = onReady
        self._onBusy: Callable[[], None] | None = onBusy
        self._timer: IDelayedCall | None = None
        self._started = 0.0
        self._handshaking = False
        self._open = False  # admitted as a session: counted in echofile_sessions_open
        self.key: str | None = None
        self.peer = ""

    def begin(self) -> None:
        """From C{connectionMade}: take the slot, then wait for TLS and the PROXY header."""
        policy, transport = self._policy, self._transport
        self._started = policy.clock.seconds()
        proxied = isProxyWrapper(transport)
        self._handshaking = awaitsHandshake(transport)
        sockPeer, key = socketPeerKey(transport)
        self.peer = peerText(key, getattr(sockPeer, "port", None))
        if proxied and not policy.trusts(transport):
            # Costs the client a connect(): within the service's budget for refusals.
            policy.limiter.logRefusal(
                "{service}: {peer} is not a trusted proxy (--trusted-proxy): closed without reading its PROXY header",
                peer=self.peer,
            )
            self._refused("untrusted_proxy")
            closeUnread(transport)
            return
        if not policy.limiter.admit(key, self.peer):  # counted as refused by the limiter, by cap
            if proxied:  # nothing can be said before the header is in...
                closeUnread(transport)
            elif self._handshaking:  # ... or before TLS is up (Twisted aborts a handshake in progress)
                transport.loseConnection()
            else:
                self._busy()
            return
        self.key = key
        if not (proxied or self._handshaking):
            # The transport owns the socket (no wrapper below): its peer is the one just
            # asked for; a wrapper's getPeer may answer otherwise, so it is asked.
            self._ready(sockPeer if getattr(transport, "transport", None) is None else transport.getPeer(), key)
            return
        if policy.deadline is not None:
            self._timer = policy.clock.callLater(policy.deadline, self._timedOut)
        if not self._handshaking:
            self._waitForHeader()

    def handshakeCompleted(self) -> None:
        """The session's C{handshakeCompleted}: TLS is up."""
        if self._handshaking:
            self._handshaking = False
            if self.key is not None:
                self._waitForHeader()

    def elapsed(self) -> float:
        """Seconds since the connection was made."""
        return self._policy.clock.seconds() - self._started

    def end(self) -> None:
        """From C{connectionLost}: give the slot back and stop waiting."""
        self._stopTimer()
        # A connection that never became a session (a bad or missing PROXY header, a TLS
        # handshake that never finished) still holds the session's bound methods, which
        # hold the session, which holds this: a cycle left to the garbage collector.
        self._onReady = self._onBusy = None
        key, self.key = self.key, None
        if key is not None:
            self._policy.limiter.release(key)
        if self._open:
            self._open = False
            self._policy.sessionsOpen.count -= 1

    def _ready(self, peer: IAddress, key: str) -> None:
        """Admitted: the connection is a session from now on (counted until L{end})."""
        self._open = True
        self._policy.accepted.inc()
        self._policy.sessionsOpen.count += 1
        onReady = self._onReady
        self._onReady = self._onBusy = None
        assert onReady is not None
        onReady(peer, key)

    def _busy(self) -> None:
        """Over a cap once ready: the session says so; nothing more will be asked of us."""
        onBusy = self._onBusy
        self._onReady = self._onBusy = None
        assert onBusy is not None
        onBusy()

    def _refused(self, reason: str) -> None:
        metrics.CONNECTIONS_REFUSED.labels(service=self._policy.limiter.service, reason=reason).inc()

    def _waitForHeader(self) -> None:
        whenPeerKnown(self._transport, self._invalidHeader).addCallback(self._headerIn)

    def _invalidHeader(self, why: str, header: str) -> None:
        """A bad PROXY header (C{header}: its start, already loggable): one budgeted line, and counted."""
        self._stopTimer()  # refused: no deadline (and no second line) for it
        self._policy.limiter.logRefusal(
            "{service}: invalid PROXY protocol header from {peer} ({why}): {header}, closing",
            peer=self.peer, why=why, header=header,
        )
        self._refused("invalid_proxy_header")

    def _headerIn(self, peer: IAddress) -> None:
        old = self.key
        if old is None:  # gone meanwhile
            return
        self._stopTimer()
        # A health check, or a client without an IP address, stays the balancer.
        if not isProxyWrapper(self._transport):  # over TLS only: the socket's own peer, named already
            key = old
        elif isinstance(peer, (IPv4Address, IPv6Address)):
            key = peerKey(peer)
            self.peer = peerText(key, peer.port, proxiedBy=self.peer)
        else:
            key = old
        if not self._policy.limiter.rekey(old, key, self.peer):
            self.key = None
            self._busy()
            return
        self.key = key
        self._ready(peer, key)

    def _timedOut(self) -> None:
        self._timer = None
        policy = self._policy
        if self._handshaking:
            message = "{service}: TLS handshake with {peer} not done in {timeout}s (--login-timeout), closing"
            self._refused("handshake_timeout")
        else:
            message = "{service}: no PROXY protocol header from {peer} in {timeout}s (--login-timeout), closing"
            self._refused("proxy_header_timeout")
        # As cheap to cause as a refusal at accept (a connect() and silence): within the same budget.
        policy.limiter.logRefusal(message, peer=self.peer, timeout=policy.deadline)
        self._transport.abortConnection()

    def _stopTimer(self) -> None:
        timer, self._timer = self._timer, None
        cancelPending(timer)
