"""
Stream exactly the announced number of bytes of an open file to a consumer.

Twisted's ``FileSender`` is not used as is: it reports success when a file
ends early (the client would get a short body followed by a success trailer)
and it has no notion of an announced size.  This producer sends exactly
``size`` bytes and fails with L{TransferInterrupted} if the file ends or
cannot be read before that.

Two ways to move the bytes, chosen per transfer:

- B{sendfile}: on a plain TCP (or UNIX) socket transport of a
  file-descriptor reactor, the kernel copies file pages straight into the
  socket with ``os.sendfile``; nothing passes through Python.  It is driven
  by the transport's own writability: the sender is the transport's pull
  producer, so the transport calls it once its buffer (the header line) has
  been flushed, and when the socket buffer fills the sender asks the
  transport to watch for writability again.
- B{chunks}: everywhere else (TLS, wrapped transports, test transports,
  platforms without ``os.sendfile``) and when ``sendfile`` fails before the
  first byte: one chunk read per request of the transport, written to it.
  Over TLS the chunk is read into one shared buffer, encrypted in one
  C{SSL_write} and its records sent straight to the socket when nothing is
  queued before them (L{writeTLSBatched}), not one write per 16 KiB record
  as C{TLSMemoryBIOProtocol.write} does.

Either way nothing is buffered in user space beyond one chunk, so a client
that does not read slows the transfer instead of growing the server.

A body may start at an offset (RESUME): ``sendfile`` is given the file
position explicitly, the chunks read on from a seek to it.
"""

from __future__ import annotations

import errno
import os
import time
from socket import AF_INET, AF_INET6
from typing import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPullProducer, ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile import metrics
from echofile.sending import OneSend
from echofile.share import OpenedFile
from echofile.twistedinternals import sendfileDescriptor, tlsWritesDropped, unsentBytes, writeTLSBatched

#: ``os.sendfile`` where the platform has it; None elsewhere (and in tests of the fallback).
_sendfile: Callable[[int, int, int, int], int] | None = getattr(os, "sendfile", None)


_plain = memoryview(bytearray())


def _tlsPlain(size: int) -> memoryview:
    """
    The first C{size} bytes of the one buffer TLS chunks are read into.

    Only the reactor thread reads into it, and each chunk is encrypted
    before the next is read (L{writeTLSBatched} keeps nothing of it), so
    every TLS transfer shares it instead of allocating 127 KiB per chunk.
    """
    global _plain
    if len(_plain) < size:
        _plain = memoryview(bytearray(size))
    return _plain[:size]


class TransferInterrupted(Exception):
    """The body could not be sent in full; the connection must be closed."""


@implementer(IPullProducer)
class BodySender(OneSend):
    """
    A pull producer: the transport asks for more each time its buffer has
    drained, so a slow client slows us down instead of growing the
    server's memory.

    @param opened: the file; it is closed when the transfer ends, either way.
    @param offset: the first byte to send (RESUME); the body is the
        C{opened.size - offset} bytes from there.
    @param onProgress: called after each chunk with the byte count, so the
        session can treat a moving transfer as activity.
    @param command: what the transfer is counted as (C{FILE} or C{RESUME}).
    @param now: the clock of the duration histogram (seconds).

    Each transfer is counted in C{echofile_transfers_total} once it ends,
    its bytes in C{echofile_sent_bytes_total} by path as they go, and the
    time of a complete one in C{echofile_transfer_duration_seconds}.
    """

    #: Bytes read and written per request in the chunked mode (more than 16 KiB, on purpose:
    #: each chunk costs a trip through the reactor; 128 KiB is what one send of a Twisted socket takes).
    CHUNK_SIZE = 128 * 1024
    #: The chunk over TLS: 1 KiB less, so that its 8 records with their headers and tags (22 to
    #: 29 bytes each) still fit one 128 KiB send of a Twisted socket; a full 128 KiB chunk
    #: left 176 bytes over, a second send and a second reactor round per chunk.
    TLS_CHUNK_SIZE = 127 * 1024
    #: At most this many bytes of TLS chunks in a row straight to the socket: under TLS nothing
    #: pauses the sender while the socket takes them all (Twisted's cooperator pulls it for up to
    #: 10 ms), so after this much one chunk goes through the transport's buffer, and the reactor
    #: serves the other connections before the next (about 1 ms, as a SENDFILE_CHUNK does).
    TLS_BURST = 1024 * 1024
    #: At most this many bytes per C{sendfile} call, so that one fast transfer does not keep
    #: the reactor from other sessions for long.
    SENDFILE_CHUNK = 8 * 1024 * 1024

    _log = Logger()

    def __init__(
        self, opened: OpenedFile, onProgress: Callable[[int], None] | None = None, offset: int = 0,
        command: str = "FILE", now: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= offset <= opened.size:
            raise ValueError(f"offset {offset} outside 0..{opened.size}")
        self._file = opened
        self._offset = offset
        self.size = opened.size - offset
        self._remaining = self.size
        self._onProgress = onProgress
        self._consumer: IConsumer | None = None
        self._done: Deferred[int] | None = None
        self._socketFd: int | None = None
        #: "sendfile" or "chunks" once sending began (for logs and tests).
        self.mode: str | None = None
        self._command = command
        self._now = now
        self._started = 0.0
        self._bytesSent = metrics.BYTES_SENT.labels(path="chunked")
        self._chunkSize = self.CHUNK_SIZE
        #: Chunks go through L{writeTLSBatched}, which copies what it keeps: they can share a buffer.
        self._overTLS = False
        #: TLS bytes sent straight to the socket since the last chunk that was queued (L{TLS_BURST}).
        self._burst = 0

    @property
    def sent(self) -> int:
        return self.size - self._remaining

    def beginSending(self, consumer: IConsumer) -> Deferred[int]:
        """
        Start streaming into C{consumer}.

        @return: fires with the byte count once every byte was handed over,
            or fails with L{TransferInterrupted} (the file ended or failed,
            or the connection went away).
        """
        self._started = self._now()
        if self._remaining == 0:
            self._file.close()
            self._count(None)
            return succeed(0)
        if self._offset:
            # Chunks are read from the descriptor's position (also after a
            # sendfile failure: sendfile at an offset leaves it alone).
            try:
                os.lseek(self._file.fd, self._offset, os.SEEK_SET)
            except OSError as e:
                self._file.close()
                self._count(Failure(e))
                return fail(TransferInterrupted(f"cannot seek to byte {self._offset}: {e}"))
        self._consumer = consumer
        self._done = done = Deferred()
        self._socketFd = sendfileDescriptor(consumer) if _sendfile is not None else None
        self.mode = "chunks" if self._socketFd is None else "sendfile"
        path = self._path(consumer)
        self._bytesSent = metrics.BYTES_SENT.labels(path=path)
        if path == "tls":
            self._chunkSize = self.TLS_CHUNK_SIZE
            self._overTLS = True
        if self.mode == "sendfile" and getattr(getattr(consumer, "socket", None), "family", None) in (AF_INET, AF_INET6):
            # The trailer is a separate small write after the body: with
            # Nagle it would wait for the peer's delayed ACK (40 ms a file).
            consumer.setTcpNoDelay(True)  # type: ignore[attr-defined]
        consumer.registerProducer(self, False)
        return done

    def resumeProducing(self) -> None:
        if self._done is None:
            return
        if self.mode == "sendfile":
            self._sendSome()
        else:
            self._writeChunk()

    def stopProducing(self) -> None:
        """The connection went away: release the file, report the failure."""
        self._finish(Failure(TransferInterrupted(f"connection lost after {self.sent} bytes")))

    # -- the two modes -------------------------------------------------------------

    def _writeChunk(self) -> None:
        if tlsWritesDropped(self._consumer):
            # Aborted between two chunks: stop now, not after pushing the rest of the file into the void.
            self._finish(Failure(TransferInterrupted(f"connection lost after {self.sent} bytes")))
            return
        want = min(self._chunkSize, self._remaining)
        try:
            if self._overTLS:
                # Into the shared buffer: writeTLSBatched encrypts it at once and keeps none of it.
                chunk: bytes | memoryview = _tlsPlain(want)
                chunk = chunk[:os.readv(self._file.fd, [chunk])]
            else:
                chunk = os.read(self._file.fd, want)
        except OSError as e:
            self._finish(Failure(TransferInterrupted(f"read failed after {self.sent} bytes: {e}")))
            return
        if not chunk:
            self._fileEnded()
            return
        self._remaining -= len(chunk)
        assert self._consumer is not None
        if writeTLSBatched(self._consumer, chunk, direct=self._burst < self.TLS_BURST):
            self._burst += len(chunk)
        else:
            self._burst = 0  # queued in the transport: the reactor turns before the next chunk
        self._progressed(len(chunk))

    def _sendSome(self) -> None:
        transport = self._consumer
        if unsentBytes(transport) > 0:
            # Called at registration while the header is still buffered: the
            # transport calls again once its buffer has drained.
            return
        assert _sendfile is not None and self._socketFd is not None
        sent = self.sent
        try:
            count = _sendfile(self._socketFd, self._file.fd, self._offset + sent, min(self._remaining, self.SENDFILE_CHUNK))
        except BlockingIOError:
            count = None
        except InterruptedError:
            count = None
        except OSError as e:
            if sent == 0 and e.errno not in (errno.EPIPE, errno.ECONNRESET):
                # This file or socket cannot be sent from (a file system
                # without sendfile support, ...): do it the portable way.
                self._log.info("sendfile failed before the first byte ({error}), sending in chunks", error=e)
                self.mode = "chunks"
                self._bytesSent = metrics.BYTES_SENT.labels(path="chunked")
                self._writeChunk()
                return
            self._finish(Failure(TransferInterrupted(f"sendfile failed after {sent} bytes: {e}")))
            return
        if count == 0:
            self._fileEnded()
            return
        if count is not None:
            self._remaining -= count
            self._progressed(count)
            if self._done is None:
                return
        # The socket buffer is full (or the chunk limit reached): let the
        # reactor tell the transport when it can write, which calls us again.
        transport.startWriting()  # type: ignore[union-attr]

    # -- the end -------------------------------------------------------------------

    def _path(self, consumer: IConsumer) -> str:
        """How the bytes go, as C{echofile_sent_bytes_total} labels it."""
        if self.mode == "sendfile":
            return "sendfile"
        if ISSLTransport.providedBy(consumer) or getattr(consumer, "TLS", False):
            return "tls"
        return "chunked"

    def _count(self, failure: Failure | None) -> None:
        result = "ok" if failure is None else "interrupted"
        metrics.TRANSFERS.labels(command=self._command, result=result).inc()
        if failure is None:
            metrics.TRANSFER_DURATION.observe(max(0.0, self._now() - self._started))

    def _progressed(self, count: int) -> None:
        self._bytesSent.inc(count)
        if self._onProgress is not None:
            self._onProgress(count)
        if self._remaining == 0:
            self._finish(None)

    def _fileEnded(self) -> None:
        self._finish(Failure(TransferInterrupted(f"file ended after {self.sent} of {self.size} bytes")))

    def _release(self) -> None:
        self._file.close()

    def _result(self) -> int:
        return self.size
