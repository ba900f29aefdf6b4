"""
The avatar of a logged-in user: one folder on disk, confined to its root.

Everything that touches the file system for the file protocol lives here, so
"where is the path confined" has one answer: :meth:`Share.resolve`.

Confinement works on real paths: the requested name is joined to the root,
every symlink is resolved, and the result must lie inside the (resolved) root
when compared segment by segment.  A string prefix test would let
``../<root>-other/`` through, and ``FilePath.child`` follows symlinks out of
the root; neither is used.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from echofile.eventlog import loggable
from echofile.text import isClean


class NotAvailable(Exception):
    """
    The name cannot be served: missing, outside the root, not a regular file
    (or folder, for listings), unreadable or malformed.

    One error for all of these on purpose: a client must not learn whether
    something exists outside the root.
    """


class IShare(Interface):
    """What a logged-in session may do with the served folder."""

    user = Attribute("The account name the session logged in as.")

    def open(name: str) -> "OpenedFile":
        """Open a regular file for streaming, or raise L{NotAvailable}."""

    def list(name: str) -> "list[Entry]":
        """List a folder, sorted, or raise L{NotAvailable}."""


@dataclass
class OpenedFile:
    """An open regular file and its size at the moment it was opened."""

    fd: int
    size: int
    path: str

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


@dataclass(frozen=True)
class Entry:
    """One line of a listing: ``size`` is None for a folder."""

    name: str
    size: int | None

    def sortKey(self) -> bytes:
        return self.name.encode("utf-8")


def splitName(name: str) -> list[str]:
    """
    Split a client-supplied name into path segments, resolving ``..``.

    ``/`` and ``\\`` both separate segments; empty segments and ``.`` are
    dropped, so a leading separator simply means the root.  A ``..`` that
    would climb above the root is refused right here, even if the path
    would come back inside (``../<root name>/x``): answering it would tell
    the client the name of the folder above.
    """
    segments: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not segments:
                raise NotAvailable(name)
            segments.pop()
        else:
            segments.append(part)
    return segments


@implementer(IShare)
class Share:
    """
    A folder served to one user.

    @param root: the served folder; resolved once here, so that a symlinked
        root works and every later check compares real paths.
    @param user: the account name, for logs and chat.
    """

    _log = Logger()

    def __init__(self, root: str, user: str) -> None:
        self.root = os.path.realpath(root)
        self.user = user

    def resolve(self, name: str) -> str:
        """
        The real path of C{name} inside the root, or raise L{NotAvailable}.

        This is the one place where paths are confined.
        """
        if "\x00" in name:
            raise NotAvailable(name)
        candidate = os.path.join(self.root, *splitName(name))
        real = os.path.realpath(candidate)
        if not self._contains(real):
            raise NotAvailable(name)
        return real

    def _contains(self, real: str) -> bool:
        try:
            return os.path.commonpath([self.root, real]) == self.root
        except ValueError:  # different drives, or mixed absolute/relative
            return False

    def open(self, name: str) -> OpenedFile:
        """
        Open a regular file inside the root for reading.

        The file is opened non-blocking (so a FIFO placed in the root does not
        block the reactor waiting for a writer) and without following a final
        symlink (the path is already resolved; a symlink appearing there now
        is a race we refuse), then checked with fstat on the descriptor itself.
        """
        if name.replace("\\", "/").endswith("/"):  # "notes.txt/" names a folder, as in POSIX
            raise NotAvailable(name)
        real = self.resolve(name)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                self._log.warn("files: out of file descriptors opening {path}: {error}", path=loggable(real), error=e)
            raise NotAvailable(name) from e
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotAvailable(name)
        except BaseException:
            os.close(fd)
            raise
        return OpenedFile(fd=fd, size=info.st_size, path=real)

    def list(self, name: str) -> list[Entry]:
        """
        The entries of a folder inside the root, sorted by UTF-8 name.

        Only regular files and folders that resolve inside the root are
        listed, under the name of the entry (a link is shown as what it
        points to).  Links out of the root, dangling links, FIFOs, devices and
        names that are not clean UTF-8 are left out.
        """
        real = self.resolve(name)
        try:
            with os.scandir(real) as it:
                dirents = list(it)
        except OSError as e:
            raise NotAvailable(name) from e
        entries = [entry for entry in map(self._entryFor, dirents) if entry is not None]
        entries.sort(key=Entry.sortKey)
        return entries

    def _entryFor(self, dirent: os.DirEntry[str]) -> Entry | None:
        if not isClean(dirent.name):
            return None
        try:
            if dirent.is_symlink() and not self._contains(os.path.realpath(dirent.path)):
                return None
            info = dirent.stat(follow_symlinks=True)
        except OSError:  # dangling link, permission, vanished meanwhile
            return None
        if stat.S_ISDIR(info.st_mode):
            return Entry(dirent.name, None)
        if stat.S_ISREG(info.st_mode):
            return Entry(dirent.name, info.st_size)
        return None

