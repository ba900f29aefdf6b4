"""
Stream exactly the announced number of bytes of an open file to a consumer.

Twisted's ``FileSender`` is not used as is: it reports success when a file
ends early (the client would get a short body followed by a success trailer)
and it has no notion of an announced size.  This producer sends exactly
``size`` bytes, reads one chunk at a time (never the whole file), and fails
with L{TransferInterrupted} if the file ends or cannot be read before that.
"""

from __future__ import annotations

import os
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IPullProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile.share import OpenedFile


class TransferInterrupted(Exception):
    """The body could not be sent in full; the connection must be closed."""


@implementer(IPullProducer)
class BodySender:
    """
    A pull producer: the transport asks for the next chunk each time its
    buffer has drained, so a slow client slows us down instead of growing
    the server's memory.

    @param opened: the file; it is closed when the transfer ends, either way.
    @param onProgress: called after each chunk with the byte count, so the
        session can treat a moving transfer as activity.
    """

    CHUNK_SIZE = 64 * 1024

    def __init__(self, opened: OpenedFile, onProgress: Callable[[int], None] | None = None) -> None:
        self._file = opened
        self._remaining = opened.size
        self._onProgress = onProgress
        self._consumer: IConsumer | None = None
        self._done: Deferred[int] | None = None

    @property
    def sent(self) -> int:
        return self._file.size - self._remaining

    def beginSending(self, consumer: IConsumer) -> Deferred[int]:
        """
        Start streaming into C{consumer}.

        @return: fires with the byte count once every byte was written, or
            fails with L{TransferInterrupted} (the file ended or failed) or
            the reason the consumer stopped us.
        """
        if self._remaining == 0:
            self._file.close()
            return succeed(0)
        self._consumer = consumer
        self._done = done = Deferred()
        consumer.registerProducer(self, False)
        return done

    def resumeProducing(self) -> None:
        if self._done is None:
            return
        try:
            chunk = os.read(self._file.fd, min(self.CHUNK_SIZE, self._remaining))
        except OSError as e:
            self._finish(Failure(TransferInterrupted(f"read failed after {self.sent} bytes: {e}")))
            return
        if not chunk:
            self._finish(
                Failure(TransferInterrupted(f"file ended after {self.sent} of {self._file.size} bytes"))
            )
            return
        self._remaining -= len(chunk)
        assert self._consumer is not None
        self._consumer.write(chunk)
        if self._onProgress is not None:
            self._onProgress(len(chunk))
        if self._remaining == 0:
            self._finish(None)

    def stopProducing(self) -> None:
        """The connection went away: release the file, report the failure."""
        self._finish(Failure(TransferInterrupted(f"connection lost after {self.sent} bytes")))

    def _finish(self, failure: Failure | None) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        self._file.close()
        assert self._consumer is not None
        self._consumer.unregisterProducer()
        if failure is None:
            done.callback(self._file.size)
        else:
            done.errback(failure)
