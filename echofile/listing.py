"""
Folder listings: one sorted copy per unchanged folder, streamed as the
client reads.

A listing is read (by L{echofile.share.Tree}) in a worker thread and kept
here as the bytes of its entry lines, ready to send.  L{ListingCache}
hands the same L{Listing} to every session that lists the same unchanged
folder, and to every session that asks while it is still being read;
L{ListingSender} streams it to one session, a chunk each time the
transport has sent the previous one.

"Unchanged" means the same (device, inode, modification time in ns) of the
folder, and read no longer than L{ListingCache.maxAge} seconds ago: the
modification time changes when an entry is added, removed or renamed, not
when a file grows, so the age bounds how old a listed size can be.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPullProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile import metrics, wire
from echofile.sending import OneSend

#: What identifies an unchanged folder: (st_dev, st_ino, st_mtime_ns).
FolderKey = tuple[int, int, int]

#: Records sorted per run before the runs are merged: a run sorts in about a
#: millisecond, and the merge is Python code, so a worker thread sorting a
#: huge folder never holds the GIL (and with it the reactor) for long.
_SORT_RUN = 4096


@dataclass(frozen=True)
class Listing:
    """
    A sorted listing: C{count} entry lines, CRLF-terminated, in C{body}.

    The header is not part of it: it repeats the name the client typed,
    which differs between sessions listing the same folder.
    """

    count: int
    body: bytes

    @classmethod
    def fromRecords(cls, records: list[bytes]) -> "Listing":
        """
        Sort and render C{records}: each is the UTF-8 name, a NUL, and the
        size in decimal or C{-} for a folder.  Names cannot contain NUL, so
        sorting the records sorts by the name's bytes (a name before every
        longer name it is a prefix of), as the protocol asks.
        """
        runs = [sorted(records[i : i + _SORT_RUN]) for i in range(0, len(records), _SORT_RUN)]
        lines = [_line(record) for record in heapq.merge(*runs)]
        return cls(len(lines), b"".join(lines))

    def lines(self) -> list[bytes]:
        """The entry lines without their CRLF."""
        return self.body.split(b"\r\n")[:-1]


_FILE_LINE = wire.FILE_ENTRY.format(size="%s", name="%s").encode("ascii") + b"\r\n"
_FOLDER_LINE = wire.FOLDER_ENTRY.format(name="%s").encode("ascii") + b"\r\n"


def _line(record: bytes) -> bytes:
    name, _, size = record.partition(b"\x00")
    if size == b"-":
        return _FOLDER_LINE % name
    return _FILE_LINE % (size, name)


class _Kept:
    """A finished listing the cache still offers to new LISTs, and the call that drops it."""

    def __init__(self, listing: Listing, expiry: IDelayedCall) -> None:
        self.listing = listing
        self.expiry = expiry


class ListingCache:
    """
    At most one copy of the listing of each unchanged folder.

    A finished listing is offered to new LISTs for C{maxAge} seconds, then
    dropped; sessions still sending it keep their own reference until they
    are done.  At most C{maxKept} listings and C{maxKeptBytes} bytes are
    kept that way (the oldest go first).  A listing still being read is
    shared too: later requests for the same folder wait for the same read.

    @param clock: runs the expiry timers.
    """

    def __init__(
        self, clock: IReactorTime, maxAge: float = 2.0, maxKept: int = 32, maxKeptBytes: int = 64 * 1024 * 1024
    ) -> None:
        self.clock = clock
        self.maxAge = maxAge
        self.maxKept = maxKept
        self.maxKeptBytes = maxKeptBytes
        self._kept: dict[FolderKey, _Kept] = {}  # oldest first
        self._keptBytes = 0
        self._reading: dict[FolderKey, list[Deferred[Listing]]] = {}

    def __len__(self) -> int:
        """Listings kept or being read (for tests and bounds)."""
        return len(self._kept) + len(self._reading)

    def shared(self, key: FolderKey) -> Deferred[Listing] | None:
        """The listing of folder C{key}, kept or being read; None if it must be read."""
        kept = self._kept.get(key)
        if kept is not None:
            return succeed(kept.listing)
        waiting = self._reading.get(key)
        if waiting is not None:
            d: Deferred[Listing] = Deferred()
            waiting.append(d)
            return d
        return None

    def reading(self, key: FolderKey, read: Deferred[Listing]) -> Deferred[Listing]:
        """
        C{read} is the listing of folder C{key} on its way: share it.

        @return: fires with the listing (or the failure) for this request.
        """
        mine: Deferred[Listing] = Deferred()
        self._reading[key] = [mine]
        read.addBoth(self._finished, key)
        return mine

    def _finished(self, result: Listing | Failure, key: FolderKey) -> None:
        """The read ended: hand its result to everyone waiting, keep a listing a while."""
        waiting = self._reading.pop(key, [])
        if isinstance(result, Failure):
            for d in waiting:
                d.errback(result)
            return None  # handed on to every waiter: not unhandled here
        self._keep(key, result)
        for d in waiting:
            d.callback(result)
        return None

    def _keep(self, key: FolderKey, listing: Listing) -> None:
        if len(listing.body) > self.maxKeptBytes or self.maxKept <= 0:
            return
        self._drop(key)
        self._kept[key] = _Kept(listing, self.clock.callLater(self.maxAge, self._drop, key))
        self._keptBytes += len(listing.body)
        while len(self._kept) > self.maxKept or self._keptBytes > self.maxKeptBytes:
            self._drop(next(iter(self._kept)))

    def _drop(self, key: FolderKey) -> None:
        kept = self._kept.pop(key, None)
        if kept is None:
            return
        self._keptBytes -= len(kept.listing.body)
        if kept.expiry.active():
            kept.expiry.cancel()


@implementer(IPullProducer)
class ListingSender(OneSend):
    """
    Stream a header line and a listing's entry lines to a consumer, one
    chunk each time it asks (a pull producer, like the file body's): a
    client that does not read holds back at most about two chunks in the
    server, the listing itself being shared.

    @param onProgress: called after each chunk with its size (activity).
    """

    CHUNK_SIZE = 64 * 1024

    def __init__(self, header: bytes, listing: Listing, onProgress: Callable[[int], None] | None = None) -> None:
        self._header = header
        self._listing = listing
        self._offset = 0
        self._onProgress = onProgress
        self._consumer: IConsumer | None = None
        self._done: Deferred[int] | None = None

    def beginSending(self, consumer: IConsumer) -> Deferred[int]:
        """
        Write the header and the first chunk now, the rest as C{consumer}
        asks; fires with the number of entries once all are handed over,
        fails with L{ConnectionLost} if the connection goes away first.
        """
        consumer.write(self._header + self._nextChunk())
        if self._offset >= len(self._listing.body):
            self._count(None)
            return succeed(self._listing.count)
        self._consumer = consumer
        self._done = done = Deferred()
        consumer.registerProducer(self, False)
        return done

    def _nextChunk(self) -> bytes:
        chunk = self._listing.body[self._offset : self._offset + self.CHUNK_SIZE]
        self._offset += len(chunk)
        if self._onProgress is not None and chunk:
            self._onProgress(len(chunk))
        return chunk

    def resumeProducing(self) -> None:
        if self._done is None:
            return
        assert self._consumer is not None
        self._consumer.write(self._nextChunk())
        if self._offset >= len(self._listing.body):
            self._finish(None)

    def stopProducing(self) -> None:
        """The connection went away."""
        self._finish(Failure(ConnectionLost(f"connection lost after {self._offset} bytes of a listing")))

    def _count(self, failure: Failure | None) -> None:
        metrics.TRANSFERS.labels(command="LIST", result="ok" if failure is None else "interrupted").inc()

    def _result(self) -> int:
        return self._listing.count
