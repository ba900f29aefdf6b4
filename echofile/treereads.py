"""
Reading the served tree's folders for LIST: a folder's listing, shared by
the sessions that ask for it while it is unchanged (L{ListingCache}), read
and sorted in a worker thread.  The walk that reaches the folder is
L{echofile.tree}'s.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred

from echofile.listing import Listing, ListingCache
from echofile.names import NotAvailable
from echofile.ownfiles import OwnFiles

RunInThread = Callable[..., "Deferred[Any]"]


class FolderReads:
    """
    The listing half of L{echofile.tree.Tree} (a mixin): it needs the
    tree's C{openFolder}, C{stat}, C{allows} and C{ownFiles}.
    """

    listings: ListingCache
    ownFiles: OwnFiles
    _runInThread: RunInThread

    if TYPE_CHECKING:
        def openFolder(self, segments: list[str]) -> int: ...
        def stat(self, segments: list[str]) -> os.stat_result: ...
        def allows(self, segment: str) -> bool: ...


    def listing(self, segments: list[str]) -> Deferred[Listing]:
        """
        The listing of the folder C{segments}: shared if that folder is
        unchanged since a recent read or is being read, else read in a
        worker thread.  Walking to the folder (a few syscalls, as for FILE)
        happens here; reading and sorting it, in the thread.
        """
        fd = self.openFolder(segments)
        try:
            info = os.fstat(fd)
            key = (info.st_dev, info.st_ino, info.st_mtime_ns)
            shared = self.listings.shared(key)
            if shared is None:
                read = self._runInThread(self.readFolder, fd, segments)
                fd = -1  # the thread closes it
                return self.listings.reading(key, read)
        except OSError as e:
            raise NotAvailable(str(e)) from e
        finally:
            if fd >= 0:
                os.close(fd)
        return shared

    def readFolder(self, fd: int, segments: list[str]) -> Listing:
        """
        Read, filter and sort the folder open on C{fd} (and close C{fd}).

        Blocking: called in a worker thread.  Only regular files and folders
        are listed, and only under names L{allows}; a symlink is listed as
        what it leads to if that is inside the root (resolved from the root,
        as a FILE of it would be), else left out.
        """
        try:
            records = []
            own = self.ownFiles.inFolder(fd)
            with os.scandir(fd) as entries:
                for entry in entries:
                    name = entry.name
                    if not self.allows(name) or own and OwnFiles.matches(own, name):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                        if stat.S_ISLNK(info.st_mode):
                            info = self.stat([*segments, name])
                    except (OSError, NotAvailable):  # vanished, dangling, outside, a loop
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        records.append(name.encode("utf-8") + b"\x00-")
                    elif stat.S_ISREG(info.st_mode):
                        records.append(name.encode("utf-8") + b"\x00%d" % info.st_size)
        except OSError as e:
            raise NotAvailable(str(e)) from e
        finally:
            os.close(fd)
        return Listing.fromRecords(records)
