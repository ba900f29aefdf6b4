"""
Progress display for file transfers: a rich progress bar per file on a
terminal, nothing at all otherwise.

Each file gets its own short-lived rich L{Progress} (started when the body
starts, stopped when it ends), so the ``... has been saved.`` lines printed
between files never fight a live display.  Redrawing runs on the reactor
(a L{LoopingCall} on the injected clock), not in rich's refresh thread.
"""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from echofile.text import sanitize

REFRESH_INTERVAL = 0.1


class Transfer:
    """The display of one file transfer; this base class shows nothing."""

    def begin(self, size: int, start: int = 0) -> None:
        """The server announced the file's size; C{start} bytes of it are here already (a resumed download)."""

    def advance(self, count: int) -> None:
        """C{count} more bytes arrived."""

    def end(self, ok: bool) -> None:
        """The transfer is over, either way."""


class Display:
    """Where transfers and notes go; this base class is the quiet one (piped, or --quiet)."""

    def __init__(self, stderr: TextIO) -> None:
        self._stderr = stderr

    def transfer(self, name: str) -> Transfer:
        return Transfer()

    def note(self, text: str) -> None:
        """A line for the user that is not output proper (chat events from the server: neutralised)."""
        self._stderr.write(sanitize(text) + "\n")
        self._stderr.flush()


class _RichTransfer(Transfer):
    def __init__(self, display: "RichDisplay", name: str) -> None:
        self._display = display
        self._name = name
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._refresher: LoopingCall | None = None

    def begin(self, size: int, start: int = 0) -> None:
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._display.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            get_time=self._display.clock.seconds,
        )
        self._task = self._progress.add_task(self._name, total=size, completed=start)
        self._progress.start()
        self._display.live = self._progress
        self._refresher = LoopingCall(self._progress.refresh)
        self._refresher.clock = self._display.clock
        self._refresher.start(REFRESH_INTERVAL, now=True)

    def advance(self, count: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)

    def end(self, ok: bool) -> None:
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        if self._progress is not None:
            self._progress.refresh()
            self._progress.stop()
            self._progress = None
            self._display.live = None


class RichDisplay(Display):
    """Progress bars on C{stderr}, which must be a terminal."""

    def __init__(self, stderr: TextIO, clock: IReactorTime) -> None:
        super().__init__(stderr)
        self.clock = clock
        self.console = Console(file=stderr)
        self.live: Progress | None = None

    def transfer(self, name: str) -> Transfer:
        return _RichTransfer(self, name)

    def note(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(sanitize(text), markup=False, highlight=False)
        else:
            super().note(text)


def makeDisplay(stderr: TextIO, clock: IReactorTime, quiet: bool) -> Display:
    """Bars only for a person watching: stderr is a terminal and --quiet was not given."""
    isatty = getattr(stderr, "isatty", None)
    if quiet or isatty is None or not isatty():
        return Display(stderr)
    return RichDisplay(stderr, clock)
