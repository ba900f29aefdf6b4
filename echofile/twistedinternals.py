"""
Every use of a private Twisted API, in one place.

The server relies on a few things Twisted does not promise: the write
buffer of a TCP transport (for echo's direct send and sendfile's "is the
buffer empty?"), LineReceiver's input buffer and loop flag, the PROXY
protocol wrapper's parsed header and C{dataReceived}, and the TLS
protocol's connection and state flags (for a file body's batched writes),
and the observers of a log publisher (for twistd's text log, L{echofile.logformat}).  Each is reached only
through a function here, and tests/unit/test_twistedinternals.py pins the
behaviour each one relies on: a Twisted upgrade that changes one breaks
that test, not the server.  Where the attributes are missing, the callers
fall back to the public path (C{transport.write}).
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from twisted.internet import tcp
from twisted.protocols.basic import LineReceiver

try:
    from OpenSSL.SSL import WantReadError
    from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol

    #: The TLS transports whose internals L{writeTLSBatched} knows (the buffering one is what
    #: C{ssl:} endpoints build; its small-write aggregator is flushed first, to keep the order).
    _TLS_TYPES: tuple[type, ...] = (TLSMemoryBIOProtocol, BufferingTLSTransport)
except ImportError:  # pragma: no cover - no pyOpenSSL, so no TLS endpoints either
    _TLS_TYPES = ()

try:
    # Private in Twisted: the class behind the public proxyEndpoint / haproxy: endpoint.
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
except ImportError:  # pragma: no cover - a Twisted without PROXY support
    HAProxyProtocolWrapper = None  # type: ignore[assignment,misc]

#: The attributes of abstract.FileDescriptor's write buffer that we read.
_BUFFER = ("dataBuffer", "offset", "_tempDataLen")


def _plainTCP(transport: object, *names: str) -> bool:
    """Is C{transport} a plain (not TLS) tcp.Connection with the buffer attributes we know?"""
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return False
    return all(hasattr(transport, name) for name in _BUFFER + names)


def directSocket(transport: object) -> socket.socket | None:
    """
    The socket of a plain TCP transport whose write buffer we can check, or
    None (TLS, PROXY-protocol wrappers, test transports).
    """
    if not _plainTCP(transport, "_writeDisconnecting"):
        return None
    return getattr(transport, "socket", None)


def canSendDirectly(transport: Any) -> bool:
    """
    Nothing is buffered and no close is pending on a transport from
    L{directSocket}: bytes sent to its socket now keep their order.
    """
    return (
        not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and not transport.disconnecting
        and not transport._writeDisconnecting
    )


def sendfileDescriptor(consumer: object) -> int | None:
    """
    The socket descriptor to C{sendfile} into, or None when C{consumer} is
    not a plain socket transport whose buffer we know how to check.
    """
    if not _plainTCP(consumer, "startWriting"):
        return None  # TLS, a wrapper, a Twisted whose buffer looks different: the safe path
    try:
        return consumer.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def unsentBytes(transport: Any) -> int:
    """Bytes still in a plain TCP transport's own write buffer."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def unframedInput(protocol: LineReceiver) -> bytes:
    """What a LineReceiver has received but not yet framed into a line."""
    return protocol._buffer


def insideLineLoop(protocol: LineReceiver) -> bool:
    """Is C{protocol}'s dataReceived still looping over received lines (more may follow)?"""
    return bool(protocol._busyReceiving)


def logObservers(publisher: Any) -> list[Any]:
    """The observers a C{LogPublisher} forwards to, in order (twistd's file observer among the global one's)."""
    return list(publisher._observers)


def isProxyWrapper(transport: object) -> bool:
    """Is C{transport} Twisted's PROXY protocol wrapper (a C{haproxy:} endpoint)?"""
    return HAProxyProtocolWrapper is not None and isinstance(transport, HAProxyProtocolWrapper)


def parsedHeader(wrapper: Any) -> Any:
    """The wrapper's parsed PROXY header (its C{source}), or None while it is incomplete."""
    return wrapper._proxyInfo


def interceptData(wrapper: Any, handler: Callable[[bytes], None]) -> None:
    """Route what the wrapper receives to C{handler} (shadowing its method on this instance only)."""
    wrapper.dataReceived = handler


def restoreData(wrapper: Any) -> None:
    """Undo L{interceptData}: back to the class's C{dataReceived}."""
    wrapper.__dict__.pop("dataReceived", None)


def writeTLSBatched(transport: Any, data: bytes) -> None:
    """
    Write C{data} to a TLS transport: encrypt it all into the memory BIO,
    then hand the records to the socket transport in one write.

    C{TLSMemoryBIOProtocol.write} loops in Python per 16 KiB record (a copy
    of the slice, an encryption call, a read of the memory BIO, a write to
    the socket transport each); for a file body that loop was most of the
    server's CPU.  OpenSSL still cuts the records at 16 KiB; only the Python
    round trips go.  Anything but an established, idle TLS connection (the
    handshake running, writes buffered behind it, the connection lost or
    closing, another transport) takes the public C{transport.write}, and so
    does what is left after a C{send} that raises: OpenSSL accepted nothing
    of that call, and Twisted's own write retries it and handles the error
    as usual.
    """
    if (
        type(transport) not in _TLS_TYPES
        or not transport._handshakeDone or transport._lostTLSConnection or transport._appSendBuffer
        or transport.disconnecting
    ):
        transport.write(data)
        return
    aggregator = getattr(transport, "_aggregator", None)
    if aggregator is not None:
        aggregator.flush()  # the header line may wait there: it goes first
    connection = transport._tlsConnection
    view = memoryview(data)
    sent = 0
    try:
        # pyOpenSSL asks for partial writes: one record per call, each into the memory BIO.
        while sent < len(data):
            sent += connection.send(view[sent:])
    except Exception:
        pass  # OpenSSL took nothing of this call: Twisted's write retries it below, handling errors its way
    # Each record adds at most a few dozen bytes (header, tag, padding) to its 16 KiB.
    room = sent + (sent >> 8) + 1024
    while sent:
        try:
            records = connection.bio_read(room)
        except WantReadError:
            break
        transport.transport.write(records)
    if sent < len(data):
        transport.write(data[sent:])
