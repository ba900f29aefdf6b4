"""
The TLS protocol's connection and state flags with pyOpenSSL's cffi
binding, for a file body's batched writes (the SSL object's mode, its
write BIO) and for knowing when what is written goes nowhere.
"""

from __future__ import annotations

import socket
from typing import Any

from echofile.twistedinternals.tcp import canSendDirectly, directSocket


try:
    # Private in pyOpenSSL: its cffi binding of OpenSSL, for the mode of one connection and its BIO.
    from OpenSSL.SSL import _ffi, _lib
    from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    #: The TLS transports whose internals L{writeTLSBatched} knows (the buffering one is what
    #: C{ssl:} endpoints build; its small-write aggregator is flushed first, to keep the order).
    _TLS_TYPES: tuple[type, ...] = (TLSMemoryBIOProtocol, BufferingTLSTransport)
    _TLS_FACTORY: type | None = TLSMemoryBIOFactory
    #: pyOpenSSL sets it on every connection (for socket BIOs): one record per C{SSL_write}.
    _PARTIAL_WRITE: int = _lib.SSL_MODE_ENABLE_PARTIAL_WRITE
except ImportError:  # pragma: no cover - no pyOpenSSL, so no TLS endpoints either
    _TLS_TYPES = ()
    _TLS_FACTORY = None


def tlsWritesDropped(transport: object) -> bool:
    """
    Has a TLS transport been aborted, or lost its TLS connection, so that
    what is written now goes nowhere until C{connectionLost} arrives?  (A
    pull producer under TLS is pulled by a cooperator: nothing pauses it.)
    """
    return type(transport) in _TLS_TYPES and bool(transport._aborted or transport._lostTLSConnection)  # type: ignore[attr-defined]


def _batchable(transport: Any) -> bool:
    """An established, idle TLS transport of a type whose internals we know?"""
    return (
        type(transport) in _TLS_TYPES
        and transport._handshakeDone and not transport._lostTLSConnection and not transport._appSendBuffer
        and not transport.disconnecting
    )


class _Records:
    """
    The one buffer the records of a chunk are read into from the memory BIO.

    It is filled and emptied within one L{writeTLSBatched} call (sent to the
    socket, or copied into bytes for the transport), and only the reactor
    thread writes, so every connection shares it.
    """

    def __init__(self) -> None:
        self.size = 0
        self.memory: Any = None
        self.view = memoryview(b"")

    def fill(self, bio: Any) -> memoryview:
        """Move everything in C{bio} here: the records, as a view valid until the next call."""
        pending = _lib.BIO_get_mem_data(bio, _ffi.NULL)
        if pending > self.size:
            self.size = max(pending, 2 * self.size)
            self.memory = _ffi.new("char[]", self.size)
            self.view = memoryview(_ffi.buffer(self.memory))
        count = _lib.BIO_read(bio, self.memory, pending) if pending > 0 else 0
        return self.view[:max(count, 0)]


_records = _Records()


#: Bytes of OpenSSL's output that may wait for the end of a C{dataReceived}: the socket transport's
#: buffer size, past which it pauses its producer (the session, which then runs no further command).
HELD_OUTPUT = 64 * 1024


def heldOutputFull(tls: Any) -> bool:
    """
    Has OpenSSL's output, held until the end of C{dataReceived}, outgrown
    L{HELD_OUTPUT}?  Then it is to be sent now: a read of pipelined
    commands (HELP: 87 bytes of reply per 5 bytes of input) would otherwise
    all be answered into memory before the socket transport's buffer could
    fill and pause the session, as it does within a read on plain TCP and
    with Twisted's TLS layer.
    """
    connection = tls._tlsConnection
    return connection is not None and _lib.BIO_get_mem_data(connection._from_ssl, _ffi.NULL) > HELD_OUTPUT


def writeTLSBatched(transport: Any, data: bytes | bytearray | memoryview, direct: bool = True) -> bool:
    """
    Write C{data} to a TLS transport: encrypt it in one C{SSL_write}, then
    send the records to the socket at once.

    @param direct: may the records go straight to the socket?  With False
        they go to the socket transport's buffer, which pauses the producer
        until the reactor has sent them: a turn of the reactor for the
        other connections.
    @return: did every record reach the socket (nothing left buffered)?

    C{TLSMemoryBIOProtocol.write} loops in Python per 16 KiB record (pyOpenSSL
    asks OpenSSL for partial writes: one record per C{send}), copies each out
    of the memory BIO twice and leaves it to the socket transport's buffer for
    the next reactor turn; for a file body that was most of the server's CPU.
    Here partial writes are off for the one call (a memory BIO never blocks:
    OpenSSL takes the whole chunk), the records are read once into a shared
    buffer and, when the socket transport has nothing buffered, sent from it
    right away; only what the socket did not take is copied, into the
    transport's buffer.  C{data} is never kept: the caller may reuse its
    buffer once this returns.

    Anything but an established, idle TLS connection (the handshake running,
    writes buffered behind it, the connection lost or closing, another
    transport) takes the public C{transport.write}, and so does the chunk
    after a C{send} that raises (the handshake not done, a fatal alert):
    Twisted's own write retries it with the same bytes, as OpenSSL requires,
    and handles the error as usual.
    """
    if not _batchable(transport):
        transport.write(bytes(data))
        return False
    aggregator = getattr(transport, "_aggregator", None)
    if aggregator is not None:
        aggregator.flush()  # the header line may wait there: it goes first
    connection = transport._tlsConnection
    ssl = connection._ssl
    partial = _lib.SSL_clear_mode(ssl, 0) & _PARTIAL_WRITE  # clearing nothing returns the mode
    _lib.SSL_clear_mode(ssl, _PARTIAL_WRITE)
    try:
        connection.send(data)
        taken = True
    except Exception:
        taken = False  # Twisted's write below retries it, handling the error its way
    finally:
        if partial:
            _lib.SSL_set_mode(ssl, _PARTIAL_WRITE)
    allSent = _sendRecords(transport.transport, _records.fill(connection._from_ssl), direct)
    if not taken:
        transport.write(bytes(data))
    return allSent and taken


def _sendRecords(tcp: Any, records: memoryview, direct: bool) -> bool:
    """
    Send C{records} straight to C{tcp}'s socket if nothing is queued before
    them; buffer a copy of the rest.  Did the socket take them all?
    """
    return _sendRecordsTo(tcp, directSocket(tcp) if direct else None, records)


def _sendRecordsTo(tcp: Any, sock: socket.socket | None, records: memoryview) -> bool:
    """L{_sendRecords} to C{sock}, C{tcp}'s L{directSocket} (None: buffer them all)."""
    sent = 0
    if records and sock is not None and tcp.connected and canSendDirectly(tcp):
        try:
            sent = sock.send(records)
        except OSError:
            sent = 0  # a full socket, or a dying connection that the transport's own write will report
    if sent < len(records):
        tcp.write(bytes(records[sent:]))
        return False
    return True


def knowTLSType(cls: type) -> None:
    """Let L{writeTLSBatched} and L{tlsWritesDropped} treat C{cls}, a subclass that keeps their internals, as theirs."""
    global _TLS_TYPES
    if cls not in _TLS_TYPES:
        _TLS_TYPES = _TLS_TYPES + (cls,)
