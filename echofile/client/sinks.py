"""
Where a downloaded body goes: memory (tests, small files), a temporary file
renamed into place only once complete (L{TempFileSink}), or a stream such as
standard output (``get -o -``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # the library needs no progress display (and no rich)
    from echofile.client.progress import Transfer


class SaveError(Exception):
    """A file arrived (or was refused) but cannot be saved where asked."""


class DiskFull(SaveError):
    """Saving failed for a reason that dooms the files after it too: stop."""


class MemorySink:
    """A L{FileSink} that keeps the body in memory (small files, tests)."""

    def __init__(self) -> None:
        self.size: int | None = None
        self.chunks: list[bytes] = []

    def begin(self, size: int) -> None:
        self.size = size

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    @property
    def value(self) -> bytes:
        return b"".join(self.chunks)


def freeBytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still put in C{folder}'s file system."""
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def writeAll(fd: int, data: bytes, target: Path) -> None:
    """Write all of C{data}; a failure (disk full, quota) names C{target}, and the caller stops."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(target)) from None
        view = view[written:]


def place(temporary: Path, target: Path, overwrite: bool) -> None:
    """Rename a finished file into place; without C{overwrite} never replace an existing file."""
    if overwrite:
        os.replace(temporary, target)
        return
    # link() refuses to replace, atomically; fall back where links are unsupported.
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise SaveError(f"{target} already exists (use --force to overwrite)") from None
    except OSError:
        if target.exists():
            raise SaveError(f"{target} already exists (use --force to overwrite)") from None
        os.replace(temporary, target)
        return
    os.unlink(temporary)


class TempFileSink:
    """
    A L{FileSink} writing to a fresh temporary file in the target's folder.

    The temporary file is made with C{O_EXCL} and mode 0666 (so the umask
    applies as for any new file) under a random hidden name; L{commit}
    renames it into place, L{discard} removes it.  L{begin} refuses a body
    larger than the free space, before a byte is written: a server that
    announces more than the disk holds must not fill it.
    """

    def __init__(self, target: Path, progress: Transfer) -> None:
        self._target = target
        self._progress = progress
        self._fd: int | None = None
        self.tempPath: Path | None = None

    def begin(self, size: int) -> None:
        free = freeBytes(self._target.parent)
        if size > free:
            raise DiskFull(f"not enough space in {self._target.parent}: the file has {size} bytes, {free} are free")
        for _ in range(100):
            path = self._target.with_name(f".{self._target.name}.{secrets.token_hex(4)}.part")
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:
                continue
            self.tempPath = path
            break
        else:
            raise SaveError(f"cannot make a temporary file in {self._target.parent}")
        self._progress.begin(size)

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        writeAll(self._fd, data, self._target)
        self._progress.advance(len(data))

    def commit(self, overwrite: bool) -> None:
        """Put the finished file in place; without C{overwrite} never replace an existing file."""
        assert self._fd is not None and self.tempPath is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        place(self.tempPath, self._target, overwrite)
        self.tempPath = None

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.tempPath is not None:
            try:
                os.unlink(self.tempPath)
            except FileNotFoundError:
                pass
            self.tempPath = None


class StreamSink:
    """
    A L{FileSink} writing straight to a binary stream (``get -o -``: standard
    output).  Nothing can be taken back there, so the caller allows one file only.
    """

    def __init__(self, stream: BinaryIO, progress: Transfer) -> None:
        self._stream = stream
        self._progress = progress

    def begin(self, size: int) -> None:
        self._progress.begin(size)

    def write(self, data: bytes) -> None:
        self._stream.write(data)
        self._progress.advance(len(data))

    def commit(self, overwrite: bool) -> None:
        self._stream.flush()

    def discard(self) -> None:
        self._stream.flush()
