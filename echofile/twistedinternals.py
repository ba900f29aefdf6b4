"""
Every use of a private Twisted API, in one place.

The server relies on a few things Twisted does not promise: the write
buffer of a TCP transport (for echo's direct send and sendfile's "is the
buffer empty?"), LineReceiver's input buffer and loop flag, the PROXY
protocol wrapper's parsed header and C{dataReceived}, and the TLS
protocol's connection and state flags with pyOpenSSL's cffi binding (for a
file body's batched writes: the SSL object's mode, its write BIO), the
TLS options inside an C{ssl:} endpoint (to turn session resumption on),
the observers of a log publisher, the file of a file observer and the lock of a log file (for
twistd's text log, L{echofile.logformat}), and closing a
flushed TCP transport in the same turn (L{closeFlushed}).  Each is reached only
through a function here, and tests/unit/test_twistedinternals.py pins the
behaviour each one relies on: a Twisted upgrade that changes one breaks
that test, not the server.  Where the attributes are missing, the callers
fall back to the public path (C{transport.write}).
"""

from __future__ import annotations

import io
import socket
import threading
from typing import Any, Callable

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.endpoints import SSL4ServerEndpoint, _WrapperServerEndpoint
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.python.logfile import BaseLogFile, LogFile

try:
    # Private in pyOpenSSL: its cffi binding of OpenSSL, for the mode of one connection and its BIO.
    from OpenSSL.SSL import _ffi, _lib
    from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol

    #: The TLS transports whose internals L{writeTLSBatched} knows (the buffering one is what
    #: C{ssl:} endpoints build; its small-write aggregator is flushed first, to keep the order).
    _TLS_TYPES: tuple[type, ...] = (TLSMemoryBIOProtocol, BufferingTLSTransport)
    #: pyOpenSSL sets it on every connection (for socket BIOs): one record per C{SSL_write}.
    _PARTIAL_WRITE: int = _lib.SSL_MODE_ENABLE_PARTIAL_WRITE
except ImportError:  # pragma: no cover - no pyOpenSSL, so no TLS endpoints either
    _TLS_TYPES = ()

try:
    # Private in Twisted: the class behind the public proxyEndpoint / haproxy: endpoint.
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
except ImportError:  # pragma: no cover - a Twisted without PROXY support
    HAProxyProtocolWrapper = None  # type: ignore[assignment,misc]

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
    sent = 0
    sock = directSocket(tcp) if direct else None
    if records and sock is not None and tcp.connected and canSendDirectly(tcp):
        try:
            sent = sock.send(records)
        except OSError:
            sent = 0  # a full socket, or a dying connection that the transport's own write will report
    if sent < len(records):
        tcp.write(bytes(records[sent:]))
        return False
    return True


def serverTLSOptions(endpoint: object) -> Any | None:
    """
    The C{CertificateOptions} an C{ssl:} server endpoint will listen with
    (also under C{haproxy:}), or None for any other endpoint.

    Twisted's C{ssl:} parser builds them with its defaults and keeps them
    in the endpoint's C{_sslContextFactory}; the PROXY wrapper endpoint
    keeps the endpoint it wraps in C{_wrappedEndpoint}.
    """
    for _ in range(4):  # haproxy:ssl: is one wrapper; never a cycle
        if isinstance(endpoint, SSL4ServerEndpoint):
            return endpoint._sslContextFactory
        if not isinstance(endpoint, _WrapperServerEndpoint):
            return None
        endpoint = endpoint._wrappedEndpoint
    return None


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


def observerFile(observer: Any) -> Any:
    """The file a C{FileLogObserver} writes to (twistd's: a C{twisted.python.logfile.LogFile})."""
    return getattr(observer, "_outFile", None)


def nativeLogFileLock(logFile: object) -> bool:
    """
    Give a C{twisted.python.logfile} file a C{threading.RLock}: its C{write}
    and C{rotate} are synchronized by C{twisted.python.threadable} with a
    pure-Python RLock (C{XLock}), about 3,000 instructions per log line;
    the C one is the same reentrant lock.  Called at start-up, before any
    other thread writes to the log.  False for anything else.
    """
    if not isinstance(logFile, BaseLogFile):
        return False
    logFile.__dict__["_threadable_lock"] = threading.RLock()
    return True


class LogFileLines:
    """
    What a C{FileLogObserver} writes one line to, in place of twistd's
    C{LogFile}: the same rotation check, bytes, size count and lock, in one
    Python call.  C{LogFile.write} took five (threadable's wrapper and its
    C{_synchPre}, C{LogFile.write}, C{BaseLogFile.write}, C{shouldRotate})
    and C{flush} three more to flush a file opened unbuffered.  Still one
    C{write} system call per line; C{rotate} (SIGUSR1) stays the C{LogFile}'s.
    """

    __slots__ = ("logFile", "_lock")

    def __init__(self, logFile: LogFile) -> None:
        self.logFile = logFile
        self._lock = logFile.__dict__["_threadable_lock"]

    def write(self, data: str | bytes) -> None:
        logFile = self.logFile
        with self._lock:
            if logFile.rotateLength and logFile.size >= logFile.rotateLength:  # LogFile.shouldRotate
                logFile.flush()
                logFile.rotate()
            logFile._file.write(data.encode("utf8") if isinstance(data, str) else data)
            logFile.size += len(data)  # LogFile.write counts characters, as it always did

    def flush(self) -> None:
        """Nothing to do: C{LogFile} opens its file unbuffered (each C{write} is the system call)."""


def directLogFileLines(observer: Any) -> LogFileLines | None:
    """
    Make the C{FileLogObserver} C{observer} write to its C{LogFile} through
    L{LogFileLines} (after L{nativeLogFileLock}); None, and nothing changed,
    unless its file is exactly a C{LogFile} over an unbuffered C{FileIO}
    (a subclass may rotate or write otherwise).
    """
    logFile = observerFile(observer)
    if type(logFile) is not LogFile or type(getattr(logFile, "_file", None)) is not io.FileIO:
        return None
    if "_threadable_lock" not in logFile.__dict__:
        return None
    lines = LogFileLines(logFile)
    observer._outFile = lines
    return lines


def restoreLogFile(observer: Any, lines: LogFileLines) -> None:
    """Undo L{directLogFileLines}: the observer writes to the C{LogFile} itself again."""
    if getattr(observer, "_outFile", None) is lines:
        observer._outFile = lines.logFile
