"""
SHA-256 of served files for ``HASH``: off the reactor thread, a few at a
time server-wide, remembered while the file is unchanged.

- B{Threads}: the digest of a 1 GiB file takes seconds of CPU; it runs in a
  thread (``hashlib`` and ``os.preadv`` release the GIL on large blocks, so
  the reactor keeps serving), reading the descriptor the session already
  opened (no second path lookup) in 1 MiB blocks into one reused buffer.
- B{The cap}: at most C{maxJobs} digests run at once (``--hash-jobs``,
  default 2); more wait in a FIFO.  A client asking for hashes of big files
  over many connections therefore costs the server at most that many cores.
- B{The cache}: digests are remembered, least recently used first out, per
  (device, inode, size, modification time, change time) of the file
  (``--hash-cache`` entries, default 1024), so asking again for an unchanged
  file costs one ``fstat``.  The change time is in the key besides what the
  contract names: unlike the modification time, no one can set it back, so
  a file rewritten in place with its old size and mtime (``rsync
  --inplace -t``, ``touch -d``) is hashed again.  A file that changed
  while it was read (C{fstat} before and after differ) is not remembered.
- B{Cancelling}: cancelling the L{Deferred} of a waiting job drops it from
  the queue; a running job stops at its next block.  Either way the
  descriptor is closed and the slot freed once no thread uses them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from echofile import metrics
from echofile.share import OpenedFile

T = TypeVar("T")

#: Runs a blocking function in a thread; its Deferred fires on the reactor thread.
RunInThread = Callable[[Callable[[], T]], "Deferred[T]"]

#: Bytes read (and fed to SHA-256) per system call.
BLOCK_SIZE = 1024 * 1024

#: The key under which a digest is remembered.
FileKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class FileDigest:
    """The SHA-256 (lowercase hex) of C{size} bytes of a file."""

    size: int
    sha256: str


class HashUnavailable(Exception):
    """The file could not be read to the end of its digest."""


class _Stopped(Exception):
    """A running job was asked to stop (its session went away)."""


def fileKey(info: os.stat_result) -> FileKey:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class DigestCache:
    """
    A bounded least-recently-used map from L{FileKey} to L{FileDigest}.

    @param maxEntries: how many digests are kept (0: none).
    """

    def __init__(self, maxEntries: int = 1024) -> None:
        self.maxEntries = maxEntries
        self._entries: OrderedDict[FileKey, FileDigest] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: FileKey) -> FileDigest | None:
        digest = self._entries.get(key)
        if digest is not None:
            self._entries.move_to_end(key)
        return digest

    def put(self, key: FileKey, digest: FileDigest) -> None:
        if self.maxEntries <= 0:
            return
        self._entries[key] = digest
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxEntries:
            self._entries.popitem(last=False)


def sha256OfFile(fd: int, size: int, stop: threading.Event | None = None, blockSize: int = BLOCK_SIZE) -> FileDigest:
    """
    The SHA-256 of the first C{size} bytes of C{fd} (blocking: call it in a thread).

    Reads with C{preadv} at explicit offsets (the descriptor's own position
    is left alone) into one buffer, so nothing but the digest grows.  A file
    that ends early is hashed as far as it goes: the digest says how many
    bytes it covers.

    @raise _Stopped: C{stop} was set.
    @raise OSError: a read failed.
    """
    digest = hashlib.sha256()
    buffer = bytearray(min(blockSize, max(size, 1)))
    view = memoryview(buffer)
    offset = 0
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError):
        pass  # only a hint
    while offset < size:
        if stop is not None and stop.is_set():
            raise _Stopped()
        count = os.preadv(fd, [view[: min(len(buffer), size - offset)]], offset)
        if count == 0:
            break
        digest.update(view[:count])
        offset += count
    return FileDigest(offset, digest.hexdigest())


class _Job:
    """One requested digest: its file, its Deferred, its place in the queue or in a thread."""

    __slots__ = ("opened", "key", "done", "state", "stop")

    def __init__(self, opened: OpenedFile, key: FileKey) -> None:
        self.opened = opened
        self.key = key
        self.done: Deferred[FileDigest] | None = None
        self.state = "waiting"  # then "running", then "finished"
        self.stop = threading.Event()


class FileHasher(Service):
    """
    The server-wide SHA-256 service of ``HASH``: the cap, the FIFO and the cache.

    @param runInThread: runs a function in a thread and fires on the reactor
        thread (the reactor's pool in production; a synchronous or manual
        stand-in in tests).
    @param maxJobs: digests computed at once.
    @param cacheSize: digests remembered.

    @ivar peak: the most jobs ever in threads at once.
    @ivar started: jobs ever handed to a thread.  @ivar hits: answers from the cache.
    @ivar bytesHashed: bytes read by finished jobs.
    """

    name = "hashes"
    _log = Logger()

    def __init__(self, runInThread: RunInThread, maxJobs: int = 2, cacheSize: int = 1024) -> None:
        self._runInThread = runInThread
        self.maxJobs = maxJobs
        self.cache = DigestCache(cacheSize)
        self._waiting: deque[_Job] = deque()
        self._running: set[_Job] = set()
        self.peak = 0
        self.started = 0
        self.hits = 0
        self.bytesHashed = 0

    @property
    def active(self) -> int:
        """Jobs in a thread now (at most C{maxJobs})."""
        return len(self._running)

    @property
    def queued(self) -> int:
        """Jobs waiting for a slot."""
        return len(self._waiting)

    def digest(self, opened: OpenedFile) -> Deferred[FileDigest]:
        """
        The SHA-256 and size of C{opened}, which this call now owns (and closes).

        @return: fires with a L{FileDigest}, or fails with L{HashUnavailable};
            cancelling it releases the job's place, thread and descriptor.
        """
        try:
            key = fileKey(os.fstat(opened.fd))
        except OSError as e:
            opened.close()
            _count("refused")
            raise HashUnavailable(str(e)) from e
        cached = self.cache.get(key)
        if cached is not None:
            opened.close()
            self._hit()
            return succeed(cached)
        job = _Job(opened, key)
        job.done = Deferred(lambda _: self._cancel(job))
        self._waiting.append(job)
        self._startWaiting()
        return job.done

    def _hit(self) -> None:
        self.hits += 1
        metrics.HASH_CACHE_HITS.inc()
        _count("ok")

    def _gauges(self) -> None:
        """After every change of the queue or the running set (one server per process)."""
        metrics.HASH_JOBS_RUNNING.set(len(self._running))
        metrics.HASH_JOBS_WAITING.set(len(self._waiting))

    def stopService(self) -> None:
        """Stop every job: waiting ones now, running ones at their next block."""
        super().stopService()
        for job in list(self._waiting) + list(self._running):
            if job.done is not None and not job.done.called:
                job.done.cancel()

    # -- the queue -------------------------------------------------------------------

    def _startWaiting(self) -> None:
        while self._waiting and len(self._running) < self.maxJobs:
            job = self._waiting.popleft()
            cached = self.cache.get(job.key)
            if cached is None:
                self._start(job)
            else:  # a job that ran meanwhile found it: nothing left to do
                job.state = "finished"
                job.opened.close()
                self._hit()
                assert job.done is not None
                job.done.callback(cached)
        self._gauges()

    def _start(self, job: _Job) -> None:
        job.state = "running"
        self._running.add(job)
        self.started += 1
        self.peak = max(self.peak, len(self._running))
        opened, stop = job.opened, job.stop

        def work() -> tuple[FileDigest, FileKey]:
            digest = sha256OfFile(opened.fd, job.key[2], stop)
            return digest, fileKey(os.fstat(opened.fd))

        try:
            d = self._runInThread(work)
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addBoth(self._finished, job)

    def _finished(self, result: tuple[FileDigest, FileKey] | Failure, job: _Job) -> None:
        """On the reactor thread, once the thread gave the descriptor back."""
        job.state = "finished"
        self._running.discard(job)
        job.opened.close()
        done = job.done
        if done is None or done.called:
            _count("interrupted")  # cancelled: its session went away
        else:
            _count("refused" if isinstance(result, Failure) else "ok")
        if isinstance(result, Failure):
            if result.check(OSError):
                self._log.warn("hash of {path} failed: {error}", path=job.opened.path, error=result.value)
            elif not result.check(_Stopped):
                self._log.failure("hash of {path} failed", result, path=job.opened.path)
            if done is not None and not done.called:
                done.errback(Failure(HashUnavailable(str(result.value))))
        else:
            digest, after = result
            self.bytesHashed += digest.size
            if after == job.key and digest.size == job.key[2]:
                self.cache.put(job.key, digest)
            else:
                self._log.info("hash of {path}: the file changed while it was read, not remembered",
                               path=job.opened.path)
            if done is not None and not done.called:
                done.callback(digest)
        self._startWaiting()

    def _cancel(self, job: _Job) -> None:
        """The asker went away: a waiting job leaves the queue, a running one stops soon."""
        if job.state == "waiting":
            self._waiting.remove(job)
            job.state = "finished"
            job.opened.close()
            _count("interrupted")
            self._gauges()
        elif job.state == "running":
            job.stop.set()  # the slot and descriptor are given back in _finished



def _count(result: str) -> None:
    metrics.TRANSFERS.labels(command="HASH", result=result).inc()
