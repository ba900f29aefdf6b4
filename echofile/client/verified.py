"""
Verified and resumable downloads (issue 12).

L{VerifyingSink} hashes a body as it arrives and lets the file be kept only
if its size and SHA-256 are those the server's ``HASH`` announced.

L{PartSink} is ``get --continue``'s download: the bytes go to ``.NAME.part``
beside the target and the server's digest and size to ``.NAME.part.sha256``
(the I{record}), both kept when the download is interrupted, so that the next
``get --continue`` asks ``RESUME`` for the rest only.  The part and its record
are untrusted input (another program, a crash, an earlier server file may have
left them): a record that does not parse, that names another digest or size
than the server's now, or a part longer than the file means starting from
byte 0; the part is hashed (in blocks) before resuming, and the file is
renamed into place only once the whole file's digest matched.

The record is one line of ASCII::

    sha256 <64 lowercase hex digits> <size in bytes, decimal>\\n
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from echofile.wire import MAX_DIGITS, Hashed
from echofile.client.sinks import DiskFull, SaveError, freeBytes, place, writeAll

if TYPE_CHECKING:
    from echofile.client.progress import Transfer

#: Bytes read per call when hashing a part that is already here.
BLOCK = 1024 * 1024

#: The most a record may hold: one line of the format above.
RECORD_LIMIT = 7 + 64 + 1 + MAX_DIGITS + 1

_RECORD = re.compile(rb"sha256 ([0-9a-f]{64}) ([0-9]{1,%d})\n" % MAX_DIGITS)


class Mismatch(SaveError):
    """What arrived is not the file the server's HASH described (or the file changed meanwhile)."""


class _Sink(Protocol):
    def begin(self, size: int) -> None: ...

    def write(self, data: bytes) -> None: ...

    def commit(self, overwrite: bool) -> None: ...

    def discard(self) -> None: ...


def checkSize(expected: Hashed, size: int, command: str) -> None:
    if size != expected.size:
        raise Mismatch(f"the file changed on the server: HASH said {expected.size} bytes, {command} sends {size}")


def checkDigest(expected: Hashed, received: str) -> None:
    if received != expected.sha256:
        raise Mismatch(f"SHA-256 mismatch: the server announced {expected.sha256}, the bytes received hash to {received}")


class VerifyingSink:
    """A sink that passes everything on to C{inner} and refuses to commit bytes of another SHA-256 than C{expected}."""

    def __init__(self, inner: _Sink, expected: Hashed) -> None:
        self._inner = inner
        self._expected = expected
        self._hash = hashlib.sha256()

    def begin(self, size: int) -> None:
        checkSize(self._expected, size, "FILE")
        self._inner.begin(size)

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._inner.write(data)

    def commit(self, overwrite: bool) -> None:
        checkDigest(self._expected, self._hash.hexdigest())
        self._inner.commit(overwrite)

    def discard(self) -> None:
        self._inner.discard()


def partPaths(target: Path) -> tuple[Path, Path]:
    """Where C{target}'s part and its record live: ``.NAME.part`` and ``.NAME.part.sha256`` beside it."""
    part = target.with_name(f".{target.name}.part")
    return part, part.with_name(part.name + ".sha256")


def formatRecord(hashed: Hashed) -> bytes:
    return b"sha256 %s %d\n" % (hashed.sha256.encode("ascii"), hashed.size)


def readRecord(path: Path) -> tuple[str, int] | None:
    """The (digest, size) a record holds, or C{None} if it is missing, not a regular file or not one valid line."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, RECORD_LIMIT + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    match = _RECORD.fullmatch(data)
    if match is None:
        return None
    return match.group(1).decode("ascii"), int(match.group(2))


class PartSink:
    """
    ``get --continue``'s sink.  L{prepare} opens (or makes) the part and
    returns the offset to resume from; L{discard} keeps the part and its
    record for the next run, L{remove} deletes both, L{commit} checks the
    whole file's digest and only then renames the part into place.
    """

    def __init__(self, target: Path, progress: Transfer, expected: Hashed) -> None:
        self._target = target
        self._progress = progress
        self._expected = expected
        self.partPath, self.recordPath = partPaths(target)
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        self.offset = 0

    def prepare(self) -> str | None:
        """
        Open the part; returns why an existing part was not resumed (then it
        starts from byte 0), or C{None}.  Sets L{offset}.
        """
        record = readRecord(self.recordPath)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        existed = self.partPath.exists() or self.partPath.is_symlink()
        try:
            self._fd = os.open(self.partPath, flags, 0o666)
        except OSError as e:
            if not self.partPath.is_symlink():
                raise SaveError(f"cannot open {self.partPath}: {e.strerror}") from None
            os.unlink(self.partPath)  # a link planted as the part: never write through it
            self._fd = os.open(self.partPath, flags | os.O_EXCL, 0o666)
            existed = False
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode):
            self._close()
            raise SaveError(f"{self.partPath} is not a regular file")
        why = None
        if existed and info.st_size:
            why = self._whyNotResume(record, info.st_size)
        if existed and why is None and info.st_size:
            self._hashPart()
            self.offset = info.st_size
        else:
            os.ftruncate(self._fd, 0)
        self._writeRecord()
        return why

    def _whyNotResume(self, record: tuple[str, int] | None, partSize: int) -> str | None:
        if record is None:
            return f"{self.recordPath.name} is missing or not a valid record"
        digest, size = record
        if (digest, size) != (self._expected.sha256, self._expected.size):
            return "the file changed on the server since the part was saved"
        if partSize > size:
            return f"the part holds {partSize} bytes, more than the file's {size}"
        return None

    def _hashPart(self) -> None:
        assert self._fd is not None
        os.lseek(self._fd, 0, os.SEEK_SET)
        while True:
            block = os.read(self._fd, BLOCK)
            if not block:
                break
            self._hash.update(block)

    def _writeRecord(self) -> None:
        temporary = self.recordPath.with_name(self.recordPath.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            os.write(fd, formatRecord(self._expected))
        finally:
            os.close(fd)
        os.replace(temporary, self.recordPath)

    def begin(self, size: int) -> None:
        checkSize(self._expected, size, "RESUME" if self.offset else "FILE")
        free = freeBytes(self._target.parent)
        if size - self.offset > free:
            raise DiskFull(f"not enough space in {self._target.parent}: {size - self.offset} bytes to come, {free} are free")
        assert self._fd is not None
        os.lseek(self._fd, self.offset, os.SEEK_SET)
        self._progress.begin(size, self.offset)

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        writeAll(self._fd, data, self._target)
        self._hash.update(data)
        self._progress.advance(len(data))

    def commit(self, overwrite: bool) -> None:
        """Rename the part into place, only once the whole file's SHA-256 is the server's."""
        checkDigest(self._expected, self._hash.hexdigest())
        assert self._fd is not None
        os.fsync(self._fd)
        self._close()
        place(self.partPath, self._target, overwrite)
        self._unlink(self.recordPath)

    def discard(self) -> None:
        """Interrupted: keep the part and its record for ``--continue``."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
        self._close()

    def remove(self) -> None:
        """The part is no good (its digest did not match): leave nothing."""
        self._close()
        self._unlink(self.partPath)
        self._unlink(self.recordPath)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
