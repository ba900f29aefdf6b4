"""
``get``: which local path each remote file is saved under, and fetching
them over a logged-in L{FileClient}.  No argument parsing, no connecting.

A file is written to a temporary file next to its target and only renamed
into place once the whole announced body and the success trailer arrived
(L{TempFileSink}) and its SHA-256 is the one the server's HASH announced
(L{VerifyingSink}), so an interrupted or altered transfer never leaves
something that looks complete.  With C{resume} (``--continue``) the file
goes to a part kept across runs (L{PartSink}) and is resumed with RESUME;
a failed whole-file check starts it over once.
Where each file goes is L{echofile.client.getplan}'s; ``get -r`` is
L{echofile.client.gettree}'s (both importable from here too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Generator

from twisted.internet.defer import Deferred, inlineCallbacks

from echofile import wire
from echofile.client.errors import ClientError, Interrupted, ServerError
from echofile.client.getplan import PlanError, Target, baseName, isSafeEntryName, keptPath, plan, segments
from echofile.client.gettree import MAX_DEPTH, getTree
from echofile.client.progress import Display
from echofile.client.protocol import FileClient
from echofile.client.sinks import DiskFull, SaveError, StreamSink, TempFileSink
from echofile.client.verified import Mismatch, PartSink, VerifyingSink

__all__ = [
    "MAX_DEPTH", "GetResult", "Getter", "PlanError", "Target", "baseName", "getFiles", "getTree", "isSafeEntryName", "keptPath",
    "plan", "segments",
]

#: What a line printer looks like: the CLI passes stdout/stderr writers.
Say = Callable[[str], None]

_SAVED = "saved"
_FAILED = "failed"

@dataclass
class GetResult:
    saved: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    connectionError: str | None = None
    stopped: bool = False


@dataclass
class Getter:
    """
    Fetches targets into C{folder} one after the other.

    A refused or unsaveable file is reported and the others still fetched; a
    lost connection (or a timeout) ends the run, since nothing more can come;
    so does a full disk.  C{stdout}, when given, receives the one file instead
    (``-o -``).
    """

    client: FileClient
    folder: Path
    force: bool
    display: Display
    out: Say
    err: Say
    showWhere: bool = False
    stdout: BinaryIO | None = None
    verify: bool = True
    resume: bool = False
    result: GetResult = field(default_factory=GetResult)
    #: Does the server answer HASH?  C{None} until its first answer.
    hashKnown: bool | None = None

    @inlineCallbacks
    def fetch(self, target: Target) -> Generator[Deferred[object], object, None]:
        name = target.name
        path = self.folder / target.local
        if self.stdout is None:
            if path.exists() and not self.force:
                self._failed(name, f"{path} already exists (use --force to overwrite)")
                return
            try:
                _makeFolders(self.folder, target.local.parent)
            except SaveError as e:
                self._failed(name, f"{name}: not saved: {e}")
                return
        for attempt in (1, 2):
            expected: wire.Hashed | None = None
            if self.verify:
                asked = yield self._askHash(name)
                if asked is _FAILED:
                    return
                expected = asked  # type: ignore[assignment]
            transfer = self.display.transfer(name)
            try:
                sink, request = self._open(name, path, transfer, expected)
            except (SaveError, OSError) as e:  # a part or record that cannot be opened or written
                self._failed(name, f"{name}: not saved: {_describe(e)}")
                return
            outcome = yield self._receive(name, sink, transfer, request)
            if isinstance(outcome, Mismatch):
                if isinstance(sink, PartSink):
                    sink.remove()
                    if attempt == 1 and not self.client.disconnected:
                        self.err(f"{name}: {outcome}; starting over")
                        continue
                else:
                    sink.discard()
                self._failed(name, f"{name}: not saved: {outcome}")
                if self.client.disconnected:  # the rest of a refused body was too long to read for nothing
                    self.result.stopped = True
                return
            if outcome is _SAVED:
                if self.stdout is None:
                    where = str(target.local)
                    shown = f" as {path}" if self.showWhere and where != name else ""
                    self.out(f"{name} has been saved{shown}.")
                self.result.saved.append(name)
            return

    @inlineCallbacks
    def _askHash(self, name: str) -> Generator[Deferred[object], object, object]:
        """The server's L{wire.Hashed} for C{name}; C{None} if it does not know HASH; L{_FAILED} if reported."""
        if self.hashKnown is False:
            return None
        try:
            hashed = yield self.client.hash(name)
        except ServerError as e:
            if e.reply == wire.INVALID_COMMAND and self.hashKnown is None:
                self.hashKnown = False
                resumeToo = " and --continue cannot resume" if self.resume else ""
                self.err(f"note: the server does not know HASH: files are saved without a SHA-256 check{resumeToo}")
                return None
            self._refused(name, e)
            return _FAILED
        except Interrupted:
            raise
        except ClientError as e:
            self._failed(name, f"{name}: not saved: {e}")
            self.result.connectionError = str(e)
            return _FAILED
        self.hashKnown = True
        return hashed

    def _open(self, name: str, path: Path, transfer, expected: wire.Hashed | None):
        """The sink for one attempt, and what to ask the server for."""
        if self.stdout is not None:
            sink: object = StreamSink(self.stdout, transfer)
        elif self.resume and expected is not None:
            part = PartSink(path, transfer, expected)
            why = part.prepare()
            if why is not None:
                self.err(f"{name}: not resuming ({why}); starting over")
            if part.offset:
                return part, lambda: self.client.resume(name, part.offset, part)
            sink = part
        else:
            sink = TempFileSink(path, transfer)
        if expected is not None and not isinstance(sink, PartSink):
            sink = VerifyingSink(sink, expected)  # type: ignore[arg-type]
        return sink, lambda: self.client.get(name, sink)  # type: ignore[arg-type]

    @inlineCallbacks
    def _receive(self, name: str, sink, transfer, request) -> Generator[Deferred[object], object, object]:
        """Run one request into C{sink}: L{_SAVED}, L{_FAILED} (reported), or the L{Mismatch} to act on."""
        try:
            yield request()
            sink.commit(self.force)
        except Mismatch as e:
            transfer.end(False)
            return e
        except ServerError as e:
            transfer.end(False)
            if isinstance(sink, PartSink) and e.reply.startswith("Offset "):
                return Mismatch(f"the file changed on the server: {e.reply}")
            self._drop(sink)
            self._refused(name, e)
            return _FAILED
        except Interrupted:
            self._end(transfer, sink)
            raise
        except (SaveError, OSError) as e:
            self._end(transfer, sink)
            self._failed(name, f"{name}: not saved: {_describe(e)}")
            if isinstance(e, (DiskFull, OSError)) or self.client.disconnected:
                self.result.stopped = True
            return _FAILED
        except ClientError as e:  # connection lost, timeout, protocol violation: the session is over
            self._end(transfer, sink)
            kept = f" (the part is kept in {sink.partPath}: get --continue resumes it)" if isinstance(sink, PartSink) else ""
            self._failed(name, f"{name}: not saved: {e}{kept}")
            self.result.connectionError = str(e)
            return _FAILED
        except BaseException:
            self._end(transfer, sink)
            raise
        transfer.end(True)
        return _SAVED

    def _refused(self, name: str, e: ServerError) -> None:
        if wire.isNotOpened(e.reply):
            self._failed(name, f"File {name} not found on server")
        else:
            self._failed(name, f"{name}: server said: {e.reply}")

    def _drop(self, sink) -> None:
        """The server refused: nothing to resume, a part included."""
        if isinstance(sink, PartSink):
            sink.remove()
        else:
            sink.discard()

    @property
    def over(self) -> bool:
        """Nothing more can be fetched."""
        return self.result.connectionError is not None or self.result.stopped

    def _end(self, transfer, sink) -> None:
        transfer.end(False)
        sink.discard()

    def _failed(self, name: str, message: str) -> None:
        self.err(message)
        self.result.failed.append(name)


def _makeFolders(root: Path, relative: PurePosixPath) -> None:
    """Make C{root}/C{relative}, refusing to pass through a symbolic link (it could lead out of C{root})."""
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise SaveError(f"{current} is a symbolic link; not saving through it")
        try:
            current.mkdir(exist_ok=True)
        except OSError as e:
            raise SaveError(f"cannot make the folder {current}: {e.strerror}") from None
        if not current.is_dir():
            raise SaveError(f"{current} is not a folder")


@inlineCallbacks
def getFiles(getter: Getter, names: list[str], parents: bool) -> Generator[Deferred[object], object, GetResult]:
    """Fetch C{names} (targets planned first: raises L{PlanError} before fetching anything)."""
    targets, bad = plan(names, parents)
    for name, why in bad:
        getter._failed(name, why)
    for target in targets:
        if getter.over:
            break
        yield getter.fetch(target)
    return getter.result


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error)
