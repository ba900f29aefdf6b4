"""
``get -r DIR``: walking a remote folder with LIST and fetching each file
through the one-file L{echofile.client.getting.Getter}.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Generator

from twisted.internet.defer import Deferred, inlineCallbacks

from echofile.client.errors import ClientError, Interrupted, ServerError
from echofile.client.getplan import PlanError, Target, isSafeEntryName, segments

if TYPE_CHECKING:
    from echofile.client.getting import GetResult, Getter

#: How deep ``get -r`` follows folders: a server cannot lead it on forever.
MAX_DEPTH = 32


@inlineCallbacks
def getTree(getter: Getter, directory: str) -> Generator[Deferred[object], object, GetResult]:
    """
    ``get -r DIR``: DIR's files and folders, recursively, into the output
    folder under DIR's base name.  Every name the server lists is checked
    before it becomes a path (L{isSafeEntryName}); an unsafe one is reported
    and skipped.
    """
    parts = segments(directory)
    if ".." in parts:
        raise PlanError(f"{directory}: cannot be saved inside the output folder")
    top = PurePosixPath(parts[-1]) if parts else PurePosixPath()
    folders = [(directory.rstrip("/\\") or "/", top, 0)]
    while folders and not getter.over:
        remote, local, depth = folders.pop()
        try:
            entries = yield getter.client.list(remote)
        except ServerError as e:
            getter._failed(remote, e.reply)
            continue
        except Interrupted:
            raise
        except ClientError as e:
            getter._failed(remote, f"{remote}: not listed: {e}")
            getter.result.connectionError = str(e)
            break
        prefix = "" if remote == "/" else remote + "/"
        subfolders = []
        for entry in entries:  # type: ignore[attr-defined]
            if getter.over:
                break
            if not isSafeEntryName(entry.name):
                getter._failed(prefix + entry.name, f"{prefix}{entry.name!r}: unsafe name from the server, skipped")
                continue
            if entry.isDirectory:
                if depth + 1 >= MAX_DEPTH:
                    getter._failed(prefix + entry.name, f"{prefix}{entry.name}/: deeper than {MAX_DEPTH} folders, skipped")
                else:
                    subfolders.append((prefix + entry.name, local / entry.name, depth + 1))
                continue
            yield getter.fetch(Target(prefix + entry.name, local / entry.name))
        folders.extend(reversed(subfolders))
    return getter.result
