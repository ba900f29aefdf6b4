"""
What the client's commands do with a logged-in L{FileClient}: save files
safely, print listings.  No argument parsing and no connecting here.

A file is written to a temporary file next to its target and only renamed
into place once the whole announced body and the success trailer arrived,
so an interrupted transfer never leaves something that looks complete.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Generator

from twisted.internet.defer import Deferred, inlineCallbacks

from echofile.client.progress import Display, Transfer
from echofile.client.protocol import ClientError, Entry, FileClient, ServerError

#: What a line printer looks like: the CLI passes stdout/stderr writers.
Say = Callable[[str], None]


class SaveError(Exception):
    """A file arrived (or was refused) but cannot be saved where asked."""


def baseName(name: str) -> str:
    """The name a remote path is saved under: its last segment (both ``/`` and ``\\`` separate)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if base in ("", ".", ".."):
        raise SaveError(f"{name}: no file name to save it under")
    return base


class TempFileSink:
    """
    A L{FileSink} writing to a fresh temporary file in the target's folder.

    The temporary file is made with C{O_EXCL} and mode 0666 (so the umask
    applies as for any new file) under a random hidden name; L{commit}
    renames it into place, L{discard} removes it.
    """

    def __init__(self, target: Path, progress: Transfer) -> None:
        self._target = target
        self._progress = progress
        self._fd: int | None = None
        self.tempPath: Path | None = None

    def begin(self, size: int) -> None:
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
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._progress.advance(len(data))

    def commit(self, overwrite: bool) -> None:
        """Put the finished file in place; without C{overwrite} never replace an existing file."""
        assert self._fd is not None and self.tempPath is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        if overwrite:
            os.replace(self.tempPath, self._target)
        else:
            # link() refuses to replace, atomically; fall back where links are unsupported.
            try:
                os.link(self.tempPath, self._target)
            except FileExistsError:
                raise SaveError(f"{self._target} already exists (use --force to overwrite)") from None
            except OSError:
                if self._target.exists():
                    raise SaveError(f"{self._target} already exists (use --force to overwrite)") from None
                os.replace(self.tempPath, self._target)
                return
            os.unlink(self.tempPath)
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


@dataclass
class GetResult:
    saved: list[str]
    failed: list[str]
    connectionError: str | None = None


@inlineCallbacks
def getFiles(
    client: FileClient,
    names: list[str],
    folder: Path,
    force: bool,
    display: Display,
    out: Say,
    err: Say,
) -> Generator[Deferred[object], object, GetResult]:
    """
    Fetch C{names} one after the other into C{folder}.

    A refused or unsaveable file is reported and the others still fetched; a
    lost connection (or a timeout) ends the run, since nothing more can come.
    """
    result = GetResult([], [])
    for name in names:
        try:
            target = folder / baseName(name)
        except SaveError as e:
            err(str(e))
            result.failed.append(name)
            continue
        if target.exists() and not force:
            err(f"{target} already exists (use --force to overwrite)")
            result.failed.append(name)
            continue
        transfer = display.transfer(name)
        sink = TempFileSink(target, transfer)
        try:
            yield client.get(name, sink)
            sink.commit(force)
        except ServerError as e:
            transfer.end(False)
            sink.discard()
            if e.reply.startswith("File ") and e.reply.endswith(" could not be opened."):
                err(f"File {name} not found on server")
            else:
                err(f"{name}: server said: {e.reply}")
            result.failed.append(name)
            continue
        except (SaveError, OSError) as e:
            transfer.end(False)
            sink.discard()
            err(f"{name}: not saved: {_describe(e)}")
            result.failed.append(name)
            continue
        except ClientError as e:  # connection lost, timeout, protocol violation: the session is over
            transfer.end(False)
            sink.discard()
            err(f"{name}: not saved: {e}")
            result.failed.append(name)
            result.connectionError = str(e)
            break
        except BaseException:
            transfer.end(False)
            sink.discard()
            raise
        transfer.end(True)
        out(f"{name} has been saved.")
        result.saved.append(name)
    return result


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error)


def formatListing(entries: list[Entry]) -> list[str]:
    """The listing as the server shows it: size (``-`` for a folder) and name, folders ending in ``/``."""
    return [f"- {e.name}/" if e.isDirectory else f"{e.size} {e.name}" for e in entries]
