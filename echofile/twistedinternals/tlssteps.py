"""
The steps of the TLS protocol's connection set-up and output that
L{echofile.tlslayer} does with less work: C{makeConnection}, the memory
BIO's output, and the small-write aggregator's next-turn flush.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import Protocol
from zope.interface import directlyProvides, providedBy

from echofile.twistedinternals.tlsrecords import _records, _sendRecordsTo

#: pyOpenSSL's number for TLS 1.3 (C{Connection.get_protocol_version}), where a close_notify ends one direction.
_TLS1_3 = 0x0304


def connectTLS(tls: Any, transport: Any) -> None:
    """
    C{TLSMemoryBIOProtocol.makeConnection}, each step once: Twisted's
    declares the transport's interfaces one C{directlyProvides} per
    interface (each replacing the last), then again all at once in
    C{ProtocolWrapper.makeConnection}, which also repeats
    C{Protocol.makeConnection} and C{registerProtocol}.  The end state is
    the same: the transport's interfaces provided, the wrapped protocol
    connected, the handshake started.
    """
    tls._tlsConnection = tls.factory._creatorCallable(tls)
    tls._appSendBuffer = []
    directlyProvides(tls, providedBy(transport))
    Protocol.makeConnection(tls, transport)
    tls.factory.registerProtocol(tls)
    if tls._connectWrapped:
        tls.wrappedProtocol.makeConnection(tls)
    tls._checkHandshakeStatus()


def sendTLSOutput(tls: Any, sock: socket.socket | None) -> None:
    """
    Twisted's C{_flushSendBIO}: what OpenSSL has put in the memory BIO, to
    the socket.  Twisted reads at most 32 KiB with C{bio_read} (an exception
    when the BIO is empty, as it is after most steps) and leaves it to the
    socket transport's buffer for the next reactor turn (two C{epoll_ctl}s and a
    C{doWrite}); here everything is read into the shared buffer and sent at
    once to C{sock}, the socket transport's L{directSocket} (looked up once
    per connection), when nothing is queued before it, the rest buffered in
    order (L{_sendRecordsTo}).  After C{abortConnection} it is dropped, as the
    socket transport's abort drops what Twisted buffered.
    """
    connection = tls._tlsConnection
    if connection is None:  # connectionLost: nothing more to send
        return
    records = _records.fill(connection._from_ssl)
    if records and not tls._aborted:
        _sendRecordsTo(tls.transport, sock, records)


class _FlushWhenDone:
    """
    Stands in an aggregator's scheduled flush while L{flushSmallWrites} is
    sure to come (C{dataReceived} is running): its C{write} then schedules
    no C{DelayedCall} of its own.
    """

    def active(self) -> bool:
        return True

    def cancel(self) -> None:
        pass


_FLUSH_WHEN_DONE = _FlushWhenDone()


def holdSmallWrites(tls: Any) -> None:
    """
    Until L{flushSmallWrites}: what is written to C{BufferingTLSTransport}
    is aggregated as usual (one C{SSL_write}), without a flush scheduled for
    the next reactor turn (a C{DelayedCall} per reply).
    """
    aggregator = tls._aggregator
    if getattr(aggregator, "_scheduled", False) is None:  # not the _NullAggregator, no flush scheduled yet
        aggregator._scheduled = _FLUSH_WHEN_DONE


def flushSmallWrites(tls: Any) -> None:
    """Send what C{BufferingTLSTransport} aggregated now; drop its flush scheduled for the next reactor turn."""
    aggregator = tls._aggregator
    scheduled = getattr(aggregator, "_scheduled", None)
    if scheduled is not None:
        aggregator._scheduled = None
        if scheduled is not _FLUSH_WHEN_DONE and scheduled.active():
            scheduled.cancel()
    aggregator.flush()  # nothing buffered, or the _NullAggregator after connectionLost: nothing happens


def flushBeforeShutdown(tls: Any) -> None:
    """
    Before Twisted's C{close_notify}: what the session wrote, still in
    C{BufferingTLSTransport}'s aggregator, to OpenSSL.

    Twisted answers the peer's C{close_notify} with its own at once, from
    inside C{dataReceived}; the replies the session wrote to the commands
    that came in the same flight were still aggregated, and were dropped.
    In TLS 1.3 the peer's C{close_notify} ends only its own sending (RFC
    8446, 6.1), so they go out first; in TLS 1.2 pending writes are
    discarded (RFC 5246, 7.2.1), as Twisted does.  (From C{loseConnection}
    the aggregator is empty already; after an abort nothing is sent.)
    """
    if tls._aborted or not tls._handshakeDone or tls._tlsConnection.get_protocol_version() < _TLS1_3:
        return
    tls._aggregator.flush()


def releaseProducer(tls: Any) -> bool:
    """
    TLS is over (the peer's C{close_notify} answered, a fatal alert) and
    Twisted told the socket transport to close once flushed: unregister the
    session's producer from the socket transport, so that it does.

    The producer (Twisted's C{_ProducerMembrane}) stays registered with the
    socket transport until the session unregisters it, which it does not
    know to do; and a socket transport whose buffer drains while its
    streaming producer is paused resumes the producer instead of closing.
    So when the session's last output filled the buffer, the connection
    stayed open (not reading, counted against the caps) until the session's
    own idle timeout.  Was it registered there (the caller then stops it
    when the connection is lost, as the socket transport would have)?
    """
    producer = tls._producer
    tcp = tls.transport
    if producer is None or getattr(tcp, "producer", None) is not producer:
        return False
    tcp.unregisterProducer()  # and, as loseConnection was called, the transport closes once its buffer is sent
    return True


def stopReleasedProducer(tls: Any) -> None:
    """Connection lost: stop the producer L{releaseProducer} took from the socket transport, if still registered."""
    producer = tls._producer
    if producer is not None:
        producer.stopProducing()


def forgetProducer(tls: Any) -> None:
    """
    Connection lost: let go of the producer still registered (the
    session's, in Twisted's C{_ProducerMembrane}).  Twisted's TLS layer
    keeps it after C{connectionLost} (the socket transport lets go of its
    own); the session holds the TLS layer as its transport, so a session
    closed by its client, not by itself, was a reference cycle left to the
    garbage collector.
    """
    tls._producer = None
