"""echofile.hashing on its own: the digest loop, the LRU cache, the cap and the change check."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from twisted.internet.defer import CancelledError

from echofile.hashing import DigestCache, FileDigest, FileHasher, HashUnavailable, fileKey, sha256OfFile
from echofile.share import OpenedFile
from support import FakeThreads


def opened(path: Path) -> OpenedFile:
    fd = os.open(path, os.O_RDONLY)
    return OpenedFile(fd=fd, size=os.fstat(fd).st_size, path=os.fspath(path))


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def test_digest_in_blocks_matches_hashlib(big):
    data = big.read_bytes()
    f = opened(big)
    try:
        assert sha256OfFile(f.fd, f.size, blockSize=64 * 1024) == FileDigest(len(data), hashlib.sha256(data).hexdigest())
        assert os.lseek(f.fd, 0, os.SEEK_CUR) == 0  # pread: the descriptor's position is untouched
    finally:
        f.close()


def test_digest_covers_only_the_announced_size_and_what_exists(big):
    data = big.read_bytes()
    f = opened(big)
    try:
        assert sha256OfFile(f.fd, 1000).sha256 == hashlib.sha256(data[:1000]).hexdigest()
        assert sha256OfFile(f.fd, len(data) + 5) == FileDigest(len(data), hashlib.sha256(data).hexdigest())
    finally:
        f.close()


def test_digest_stops_when_asked(big):
    stop = threading.Event()
    stop.set()
    f = opened(big)
    try:
        with pytest.raises(Exception) as raised:
            sha256OfFile(f.fd, f.size, stop)
        assert type(raised.value).__name__ == "_Stopped"
    finally:
        f.close()


def test_cache_is_bounded_least_recently_used_first_out():
    cache = DigestCache(2)
    a, b, c = (1, 1, 1, 1, 1), (1, 2, 1, 1, 1), (1, 3, 1, 1, 1)
    cache.put(a, FileDigest(1, "a"))
    cache.put(b, FileDigest(1, "b"))
    assert cache.get(a) == FileDigest(1, "a")  # a is now the most recent
    cache.put(c, FileDigest(1, "c"))
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None
    assert len(cache) == 2


def test_cache_of_size_zero_keeps_nothing():
    cache = DigestCache(0)
    cache.put((1, 1, 1, 1, 1), FileDigest(1, "a"))
    assert len(cache) == 0


def test_key_changes_with_content_size_and_times(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = fileKey(os.stat(path))
    info = os.stat(path)
    path.write_bytes(b"two")  # same size; mtime may even be set back:
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert fileKey(os.stat(path)) != first  # ... the change time still moved


def test_file_changed_while_hashed_is_answered_but_not_remembered(big):
    threads = FakeThreads()
    hashes = FileHasher(threads)
    results = []
    hashes.digest(opened(big)).addCallback(results.append)
    with open(big, "r+b") as f:  # the file changes after the job took its key
        f.write(b"changed")
    threads.runNext()
    assert results[0].size == big.stat().st_size
    assert len(hashes.cache) == 0
    hashes.digest(opened(big)).addCallback(results.append)
    threads.runNext()
    assert results[1].sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert len(hashes.cache) == 1 and threads.calls == 2


def test_file_that_shrank_while_hashed_is_not_remembered(big):
    threads = FakeThreads()
    hashes = FileHasher(threads)
    results = []
    hashes.digest(opened(big)).addCallback(results.append)
    os.truncate(big, 100)
    threads.runNext()
    assert results[0].size == 100
    assert len(hashes.cache) == 0


def test_cancel_waiting_and_fifo_order(tmp_path):
    threads = FakeThreads()
    hashes = FileHasher(threads, maxJobs=1)
    paths = []
    for n in range(3):
        path = tmp_path / f"f{n}"
        path.write_bytes(b"%d" % n)
        paths.append(path)
    order: list[str] = []
    ds = [hashes.digest(opened(p)).addCallback(lambda d: order.append(d.sha256)) for p in paths]
    failures = []
    ds[1].addErrback(failures.append)
    ds[1].cancel()
    assert failures[0].check(CancelledError) and hashes.queued == 1
    threads.runNext()
    threads.runNext()
    assert order == [hashlib.sha256(b"0").hexdigest(), hashlib.sha256(b"2").hexdigest()]
    assert hashes.peak == 1 and hashes.started == 2


def test_failing_fstat_is_hash_unavailable_and_closes(tmp_path, monkeypatch):
    hashes = FileHasher(FakeThreads(synchronous=True))
    path = tmp_path / "f"
    path.write_bytes(b"x")
    f = opened(path)

    def failing(fd):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as patch:  # only around the call: pytest's own capture uses fstat
        patch.setattr(os, "fstat", failing)
        with pytest.raises(HashUnavailable):
            hashes.digest(f)
    assert f.fd == -1
