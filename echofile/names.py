"""
A client-supplied name as path segments, before anything touches the disk:
the one error for every name that cannot be served, and the rules for
separators, C{.} and C{..} (L{echofile.tree} walks the segments).
"""

from __future__ import annotations


class NotAvailable(Exception):
    """
    The name cannot be served: missing, outside the root, hidden, not a
    regular file (or folder, for listings), unreadable or malformed.

    One error for all of these on purpose: a client must not learn whether
    something exists outside the root.
    """


def splitName(name: str) -> list[str]:
    """
    Split a client-supplied name into path segments, resolving ``..``.

    ``/`` and ``\\`` both separate segments; empty segments and ``.`` are
    dropped, so a leading separator simply means the root.  A ``..`` that
    would climb above the root is refused right here, even if the path
    would come back inside (``../<root name>/x``): answering it would tell
    the client the name of the folder above.
    """
    if "\x00" in name:
        raise NotAvailable(name)
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


def namesFolder(name: str) -> bool:
    """
    Does C{name} end in a separator, ``.`` or ``..``?  Then it names a
    folder whatever precedes it (``notes.txt/.`` as ``notes.txt/``, as in
    POSIX), and FILE refuses it.
    """
    return name.replace("\\", "/").rpartition("/")[2] in ("", ".", "..")
