"""
The served tree: one folder on disk, opened once, and every name walked
from its handle.  "Where is a path confined" has one answer here:
L{Tree.resolve}.  The user's view of it (the avatar) is L{echofile.share}.

Confinement never checks a path and then opens it (a folder swapped for a
symlink in between would lead anywhere).  The root is opened once, and
every name is walked from that handle one segment at a time with
C{openat(O_NOFOLLOW)}: each step opens exactly the entry it looked at, in
the folder it holds open.  A symlink met on the way is read
(C{readlinkat}) and its target walked the same way, from the folder that
holds the link, with its C{..} taken against the folders walked so far: a
C{..} above the root, or an absolute target outside it, is refused.

Why by hand and not C{openat2(RESOLVE_BENEATH)}: the walk must see every
segment, the ones inside link targets included, to refuse hidden (dot) and
unclean names on the way (C{link -> .git/config}); openat2 resolves in the
kernel without telling which names it passed.  The walk also works on every
POSIX system and kernel, where openat2 is Linux 5.6 and later only.
"""

from __future__ import annotations

import errno
import os
import stat
import weakref
from typing import Callable, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from echofile.listing import ListingCache
from echofile.names import NotAvailable
from echofile.ownfiles import OwnFiles
from echofile.text import isClean, sanitize
from echofile.treereads import FolderReads, RunInThread

_T = TypeVar("_T")

#: Symlinks followed in one name at most, as Linux's MAXSYMLINKS.
MAX_SYMLINKS = 40

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: A folder passed through: O_PATH needs only search permission, as a path lookup would.
_WALK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC
#: A folder to list.
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC
#: A file to serve: non-blocking, so that a FIFO cannot block the reactor waiting for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC
#: What opening a symlink with O_NOFOLLOW fails with (ELOOP; EMLINK on FreeBSD; ENOTDIR with O_DIRECTORY).
_MAYBE_LINK = {errno.ELOOP, errno.EMLINK, errno.ENOTDIR}

def _close(fd: int) -> None:
    os.close(fd)


class Tree(FolderReads):
    """
    The served folder, opened once, shared by every session.  Its
    listings (LIST) are L{FolderReads}'.

    @param root: the folder; its real path is kept for logs and for
        absolute symlink targets, its handle for every lookup.  (A root
        renamed while the server runs is still served: the handle follows
        the folder.)
    @param dotfiles: serve and list names with a segment starting with
        ``.`` (C{--dotfiles}); hidden by default.
    @param runInThread: C{runInThread(f, *args)} runs C{f} off the reactor
        thread, returning a Deferred (default: the reactor's thread pool).
    @param clock: runs the expiry of shared listings (default: the reactor).
    """

    _log = Logger()

    def __init__(
        self,
        root: str,
        dotfiles: bool = False,
        runInThread: RunInThread | None = None,
        clock: IReactorTime | None = None,
        ownFiles: OwnFiles | None = None,
    ) -> None:
        if runInThread is None or clock is None:
            from twisted.internet import reactor
            from twisted.internet.threads import deferToThread

            runInThread = runInThread or deferToThread
            clock = clock or reactor  # type: ignore[assignment]
        self.path = os.path.realpath(root)
        self.dotfiles = dotfiles
        self.ownFiles = ownFiles or OwnFiles()
        self._runInThread = runInThread
        self.listings = ListingCache(clock)  # type: ignore[arg-type]
        self.fd = os.open(self.path, _FOLDER_FLAGS)
        self._closer = weakref.finalize(self, _close, self.fd)

    def close(self) -> None:
        """Close the root's handle (at the latest when the tree is garbage)."""
        self._closer()

    def allows(self, segment: str) -> bool:
        """
        May a path segment be served or listed?  Not a hidden (dot) name
        unless C{dotfiles}, and only clean UTF-8 without control characters
        (L{isClean}): what LIST leaves out is never served by name either.
        Not a name with a ``\\`` either: a client's ``\\`` separates
        segments, so LIST would offer a name that no FILE can spell.
        """
        if not self.dotfiles and segment.startswith("."):
            return False
        return "\x00" not in segment and "\\" not in segment and isClean(segment)

    # -- the walk ------------------------------------------------------------------

    def resolve(self, segments: list[str], finish: Callable[[int, str], _T | None]) -> _T:
        """
        Walk C{segments} from the root's handle and return C{finish(folderFd,
        name)} for the last one (C{name} is ``.`` when the walk ends on a
        folder itself).  C{finish} returns None when C{name} is a symlink,
        which is then followed here.

        This is the one place where names are confined: every folder on the
        way is opened with O_NOFOLLOW relative to the one before, every
        symlink is followed by hand, and a ``..`` (in a link target) goes
        back along the folders walked, never above the root.  Every
        descriptor opened here is closed here.

        @raise NotAvailable: for anything that cannot be resolved inside.
        """
        pending = segments[::-1]  # a stack: the next segment is at the end
        walked: list[str] = []  # names of the folders below the root, down to `current`
        current = self.fd
        links = 0
        try:
            while True:
                if not pending:
                    result = finish(current, ".")
                    if result is None:
                        raise NotAvailable(".")
                    return result
                segment = pending.pop()
                if segment in ("", "."):
                    continue
                if segment == "..":
                    if not walked:
                        raise NotAvailable("..")  # above the root
                    walked.pop()
                    previous, current = current, self.fd
                    if previous != self.fd:
                        _close(previous)
                    current = self._descend(walked)
                    continue
                if not self.allows(segment):
                    raise NotAvailable(segment)
                if pending:
                    try:
                        opened = os.open(segment, _WALK_FLAGS, dir_fd=current)
                    except OSError as e:
                        if e.errno not in _MAYBE_LINK:
                            raise
                    else:
                        previous, current = current, opened
                        if previous != self.fd:
                            _close(previous)
                        walked.append(segment)
                        continue
                else:
                    if OwnFiles.matches(self.ownFiles.inFolder(current), segment):
                        raise NotAvailable(segment)  # the pid or log file
                    result = finish(current, segment)
                    if result is not None:
                        return result
                # A symlink (or, if readlink fails, something that is not a folder).
                links += 1
                if links > MAX_SYMLINKS:
                    raise NotAvailable(segment)
                target = os.readlink(segment, dir_fd=current)
                if target.startswith("/"):
                    target = self._insideRoot(target)
                    walked.clear()
                    previous, current = current, self.fd
                    if previous != self.fd:
                        _close(previous)
                pending.extend(reversed(target.split("/")))
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                # The error names the segment, which came from the client: sanitized.
                self._log.warn("files: out of file descriptors resolving a name: {error}", error=sanitize(str(e)))
            raise NotAvailable(str(e)) from e
        finally:
            if current != self.fd:
                _close(current)

    def _descend(self, walked: list[str]) -> int:
        """A new handle on the folder C{walked} below the root, following no link."""
        current = self.fd
        try:
            for name in walked:
                opened = os.open(name, _WALK_FLAGS, dir_fd=current)
                previous, current = current, opened
                if previous != self.fd:
                    _close(previous)
        except OSError as e:
            if current != self.fd:
                _close(current)
            raise NotAvailable("/".join(walked)) from e
        return current

    def _insideRoot(self, target: str) -> str:
        """An absolute link target as a path relative to the root, if it lies (lexically) inside."""
        prefix = self.path.rstrip("/") + "/"
        if target == self.path:
            return "."
        if target.startswith(prefix):
            return target[len(prefix):]
        raise NotAvailable(target)

    # -- what the walk ends with ------------------------------------------------------

    def openFile(self, segments: list[str]) -> int:
        """A descriptor on the regular file named by C{segments}, or L{NotAvailable}."""
        fd = self.resolve(segments, _openFileAt)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotAvailable("not a regular file")
        except BaseException:
            _close(fd)
            raise
        return fd

    def openFolder(self, segments: list[str]) -> int:
        """A readable descriptor on the folder named by C{segments}, or L{NotAvailable}."""
        return self.resolve(segments, _openFolderAt)

    def stat(self, segments: list[str]) -> os.stat_result:
        """What C{segments} leads to (every link followed, confined), or L{NotAvailable}."""
        return self.resolve(segments, _statAt)


def _openFileAt(folder: int, name: str) -> int | None:
    try:
        return os.open(name, _FILE_FLAGS, dir_fd=folder)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):
            return None
        raise


def _openFolderAt(folder: int, name: str) -> int | None:
    try:
        return os.open(name, _FOLDER_FLAGS, dir_fd=folder)
    except OSError as e:
        if e.errno in _MAYBE_LINK:
            return None
        raise


def _statAt(folder: int, name: str) -> os.stat_result | None:
    info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    return None if stat.S_ISLNK(info.st_mode) else info
