"""
The avatar of a logged-in user: the served L{echofile.tree.Tree} as that
user sees it (open a file, list a folder).  Confinement is the tree's job
(L{echofile.tree.Tree.resolve}); the names it re-exports stay importable here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from echofile.listing import Listing
from echofile.names import NotAvailable, namesFolder, splitName
from echofile.tree import MAX_SYMLINKS, Tree, _close

__all__ = [
    "MAX_SYMLINKS", "Entry", "IShare", "NotAvailable", "OpenedFile", "Share", "Tree", "namesFolder", "splitName",
]


class IShare(Interface):
    """What a logged-in session may do with the served folder."""

    user = Attribute("The account name the session logged in as.")

    def open(name: str) -> "OpenedFile":
        """Open a regular file for streaming, or raise L{NotAvailable}."""

    def listing(name: str) -> "Deferred[Listing]":
        """The sorted listing of a folder, read off the reactor thread; fails with L{NotAvailable}."""


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


@implementer(IShare)
class Share:
    """
    The served folder as one user sees it.

    @param tree: the served L{Tree} (or a folder's path, for a tree of its own).
    @param user: the account name, for logs and chat.
    """

    _log = Logger()

    def __init__(self, tree: Tree | str, user: str) -> None:
        self.tree = tree if isinstance(tree, Tree) else Tree(tree)
        self.user = user

    @property
    def root(self) -> str:
        """The real path of the served folder."""
        return self.tree.path

    def open(self, name: str) -> OpenedFile:
        """
        Open a regular file inside the root for reading (see L{Tree.resolve}),
        non-blocking, and check with fstat on the descriptor itself that it
        is a regular file.
        """
        if namesFolder(name):
            raise NotAvailable(name)
        segments = splitName(name)
        fd = self.tree.openFile(segments)
        try:
            size = os.fstat(fd).st_size
        except OSError as e:
            _close(fd)
            raise NotAvailable(name) from e
        return OpenedFile(fd=fd, size=size, path=os.path.join(self.tree.path, *segments))

    def listing(self, name: str) -> Deferred[Listing]:
        """The folder's listing (see L{Tree.listing}); fails with L{NotAvailable}."""
        return maybeDeferred(lambda: self.tree.listing(splitName(name)))

    def list(self, name: str) -> list[Entry]:
        """
        The entries of a folder, read on the calling thread (blocking: for
        tests and tools; the protocol uses L{listing}).
        """
        fd = self.tree.openFolder(splitName(name))
        listing = self.tree.readFolder(fd, splitName(name))
        return [_entry(line) for line in listing.lines()]


def _entry(line: bytes) -> Entry:
    size, _, name = line.partition(b" ")
    if size == b"-":
        return Entry(name[:-1].decode("utf-8"), None)
    return Entry(name.decode("utf-8"), int(size))
