"""
The server's own files, never served: twistd's pid file and log file (and
the log's rotated copies), should they lie inside ``--root``.

Started in the folder it serves (the README's first command), twistd writes
``twistd.pid`` there unless told ``--pidfile=``; a client could then read the
pid, and ``--logfile`` inside the root would hand every client the log,
with the addresses and names of everyone else.  The files may not exist yet
when the service is built (twistd writes the pid file later), so they are
known by their folder (device and inode) and name, not by their own inode.
"""

from __future__ import annotations

import os
from typing import Iterable


class OwnFiles:
    """
    @param paths: the pid file and log file paths (relative to the current
        folder, as twistd takes them); missing folders are ignored.
    """

    def __init__(self, paths: Iterable[str | None] = ()) -> None:
        self._names: dict[tuple[int, int], set[str]] = {}
        for path in paths:
            if not path:
                continue
            folder, name = os.path.split(os.path.abspath(path))
            try:
                info = os.stat(folder)
            except OSError:
                continue
            self._names.setdefault((info.st_dev, info.st_ino), set()).add(name)

    def __bool__(self) -> bool:
        return bool(self._names)

    def inFolder(self, folder: int) -> set[str]:
        """The own files' names in the folder open on C{folder}: none, mostly (one fstat to know)."""
        if not self._names:
            return set()
        info = os.fstat(folder)
        return self._names.get((info.st_dev, info.st_ino), set())

    @staticmethod
    def matches(names: set[str], name: str) -> bool:
        """Is C{name} one of C{names}, or a rotated copy of one (``twistd.log.1``)?"""
        if name in names:
            return True
        base, _, suffix = name.rpartition(".")
        return suffix.isdigit() and base in names
