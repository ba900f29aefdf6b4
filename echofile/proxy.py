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

L{whenPeerKnown} is what a session waits on instead (through
L{echofile.admission}): a Deferred that fires, with the client's address,
at once for any other transport, and for the wrapper once its header has
been parsed and found valid.  Bytes that arrive with or after the header are
held until the session has started, then handed over in order.  A
connection that closes first never fires the Deferred (the protocol's
C{connectionLost} runs as usual); the deadline for the header is the
admission's.

Twisted's parsers check the header's shape, not its content: a v1 header's
addresses may be any text (``not-an-ip``, escape sequences) and its ports
any integer, and a port that is not a number raises C{ValueError} out of
C{dataReceived}.  Here such a header closes the connection, logged
sanitised, never with a traceback.

Health checks: a ``LOCAL`` (v2) or ``UNKNOWN`` (v1) header carries no client
address.  Such a connection gets a L{HealthCheck} peer, counted as the
balancer.  A v2 header with a UNIX-socket source (HAProxy does not send
one) is counted as the balancer too: the client has no address to count.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, ITransport
from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.python.failure import Failure

from echofile.addresses import HealthCheck, isValidClient, peerKey, socketKey, socketPeer
from echofile.eventlog import peerText
from echofile.text import sanitize
from echofile.twistedinternals import interceptData, isProxyWrapper, parsedHeader, restoreData

__all__ = ["HealthCheck", "closeUnread", "isProxyWrapper", "peerKey", "whenPeerKnown"]

_log = Logger(namespace="echofile.proxy")

#: How much of a bad header is kept for the log: a v1 header is at most 107 bytes.
_LOGGED_HEADER_BYTES = 108
_V1_SIGNATURE = b"PROXY "
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _loggable(seen: bytes) -> str:
    """
    What of a bad header may be logged: the header itself, made printable,
    and never what follows it or what is not a header at all (a client that
    bypassed the balancer may have typed ``AUTH <password>``).
    """
    if seen.startswith(_V1_SIGNATURE):
        return sanitize(repr(seen.split(b"\r\n", 1)[0]))
    if seen.startswith(_V2_SIGNATURE):
        return sanitize(repr(seen[:16]))  # signature, version and command, family, length
    return f"{len(seen)} bytes that are not a PROXY protocol header, not shown"


def whenPeerKnown(transport: ITransport, refused: Callable[[str, str], None] | None = None) -> Deferred[IAddress]:
    """
    A Deferred that fires with the peer address once it is known: now for
    an ordinary transport, after a valid PROXY header for a C{haproxy:} one.

    Call it from C{connectionMade} and start the session in its callback.
    C{refused} is called with why and the header's start (loggable) if a
    bad header closes the connection (then the Deferred never fires); it
    logs the refusal (L{echofile.admission} within the service's refusal
    budget); without it the refusal is logged here.  Data the wrapper passes on before the callback ran is delivered to the
    protocol right after it.
    """
    if not isProxyWrapper(transport):
        return succeed(transport.getPeer())
    return _HeaderWait(transport, refused).deferred


def closeUnread(wrapper: Any) -> None:
    """
    Close a C{haproxy:} connection without reading its header: whatever the
    wrapper is still handed (bytes already read, or decrypted by a TLS layer
    below it) is dropped, never parsed.
    """
    interceptData(wrapper, _drop)
    wrapper.loseConnection()


def _drop(data: bytes) -> None:
    pass


def _peerFrom(wrapper: Any) -> IAddress | None:
    """The client named by the wrapper's parsed header, or None if it names no valid one."""
    source = parsedHeader(wrapper).source
    if source is None:  # LOCAL / UNKNOWN: the balancer itself
        return HealthCheck(wrapper.transport.getPeer())
    if isinstance(source, UNIXAddress):
        return wrapper.transport.getPeer()
    return source if isValidClient(source) else None


class _HeaderWait:
    """
    Stands in for the session as the wrapper's C{wrappedProtocol} until the
    header is parsed, holding whatever the wrapper passes on meanwhile, and
    watches the wrapper's C{dataReceived} for the moment the header is done.
    """

    def __init__(self, wrapper: Any, refused: Callable[[str, str], None] | None = None) -> None:
        self._wrapper = wrapper
        self._onRefused = refused
        self._protocol = wrapper.wrappedProtocol
        self._held: list[bytes] = []
        self._seen = b""  # the start of the header, for the log if it is bad
        self._waiting = True
        self.deferred: Deferred[IAddress] = Deferred()
        self._parse = wrapper.dataReceived
        wrapper.wrappedProtocol = self
        interceptData(wrapper, self._wrapperDataReceived)

    # -- the wrapper's side ---------------------------------------------------

    def _wrapperDataReceived(self, data: bytes) -> None:
        if not self._waiting:  # a bad header closed us: read nothing more
            return
        if len(self._seen) < _LOGGED_HEADER_BYTES:
            self._seen += data[: _LOGGED_HEADER_BYTES - len(self._seen)]
        try:
            self._parse(data)
        except ValueError:  # Twisted's v1 parser: int() of a port that is not a number, bytes that are not UTF-8
            self._refuse("a field that is not a number or not text")
            return
        wrapper = self._wrapper
        if parsedHeader(wrapper) is None:
            if wrapper.disconnecting:  # Twisted found it malformed and closed
                self._refuse("not a PROXY protocol header")
            return
        if wrapper.wrappedProtocol is not self:
            return
        peer = _peerFrom(wrapper)
        if peer is None:
            self._refuse("not a valid client address")
            return
        self._waiting = False
        self._restore()
        self.deferred.callback(peer)
        held, self._held = self._held, []
        for chunk in held:
            if self._closing():
                break  # refused (busy) or ended: a closing transport reads nothing more
            self._protocol.dataReceived(chunk)

    def _refuse(self, why: str) -> None:
        """A bad header: log what it was (made printable) and close; the session never starts."""
        self._held = []
        self._waiting = False  # from now on everything the wrapper passes on is dropped
        header = _loggable(self._seen)
        if self._onRefused is not None:
            self._onRefused(why, header)
        else:
            _log.info(
                "invalid PROXY protocol header from {peer} ({why}): {header}, closing",
                peer=peerText(socketKey(self._wrapper), getattr(socketPeer(self._wrapper), "port", None)),
                why=why, header=header,
            )
        self._wrapper.loseConnection()

    def _closing(self) -> bool:
        return bool(self._wrapper.disconnecting or getattr(self._wrapper.transport, "disconnecting", False))

    def _restore(self) -> None:
        """Give the wrapper back to the session."""
        self._wrapper.wrappedProtocol = self._protocol
        restoreData(self._wrapper)

    # -- what the wrapper calls on its wrapped protocol meanwhile -------------

    def dataReceived(self, data: bytes) -> None:
        if self._waiting:
            self._held.append(data)

    def connectionLost(self, reason: Failure) -> None:
        """Closed before the header was complete (or after a bad one): the session ends without starting."""
        self._waiting = False
        self._restore()
        self._protocol.connectionLost(reason)

    def logPrefix(self) -> str:
        prefix = getattr(self._protocol, "logPrefix", None)
        return prefix() if callable(prefix) else type(self._protocol).__name__
