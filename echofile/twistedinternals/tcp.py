"""
A plain TCP transport's write buffer and socket (C{abstract.FileDescriptor}'s
C{dataBuffer}, C{offset}, C{_tempDataLen}, C{_writeDisconnecting}): for the
direct send of echo replies, files replies and chat events, sendfile's "is
the buffer empty?", and closing a flushed transport in the turn its peer's
FIN arrives.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure


#: The attributes of abstract.FileDescriptor's write buffer that we read.
_BUFFER = ("dataBuffer", "offset", "_tempDataLen")


#: What L{_plainTCP} found per transport class and attribute names (a class's
#: connections all have the attributes its __init__ sets).
_plainTypes: dict[tuple[type, tuple[str, ...]], bool] = {}


def _plainTCP(transport: object, *names: str) -> bool:
    """Is C{transport} a plain (not TLS) tcp.Connection with the buffer attributes we know?"""
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return False
    key = (type(transport), names)
    known = _plainTypes.get(key)
    if known is None:
        known = _plainTypes[key] = all(hasattr(transport, name) for name in _BUFFER + names)
    return known


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


def writeNow(sock: socket.socket | None, transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}: straight into C{sock} (its L{directSocket})
    when nothing waits before it, as asyncio does; C{transport.write} would
    buffer it, ask the reactor for writability (an C{epoll_ctl}), send it one
    reactor turn later and stop asking (another).  What the socket does not
    take, or an error, goes through the transport, which keeps the order and
    reports the error its own way.  Echo replies, files replies and chat
    events all go out here.
    """
    if sock is not None and canSendDirectly(transport):
        try:
            sent = sock.send(data)
        except OSError:  # EAGAIN, or an error the transport will find and report itself
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


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


#: One Failure for every such close, as the reactor keeps one for every ConnectionDone it reports.
_CONNECTION_DONE = Failure(ConnectionDone())


def closeFlushed(transport: Any) -> bool:
    """
    Close a plain TCP transport now if nothing is left to send (its buffer
    empty, no producer, no close under way): what C{loseConnection} would
    do one reactor turn later (ask for writability, find nothing to write,
    then the same orderly C{connectionLost}), without the turn and its two
    C{epoll_ctl}.  False, and nothing done, for anything else (TLS, the
    PROXY wrapper, a transport still sending): the caller closes the
    public way.
    """
    if not _plainTCP(transport, "_writeDisconnecting", "producer", "connected"):
        return False
    if not transport.connected or transport.producer is not None or not canSendDirectly(transport):
        return False
    # abstract.FileDescriptor.loseConnection's own path for a write side already shut
    # (connectionLost stops reading and writing itself).
    transport.connectionLost(_CONNECTION_DONE)
    return True
