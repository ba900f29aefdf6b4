"""
What a run of ``echofile-client`` prints to, and the errors that end it.

Every line the program prints goes through L{Streams.out} or L{Streams.err},
which neutralise control and escape sequences (L{echofile.text.sanitize}):
much of what is printed comes from the server, which is not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, TextIO

from echofile.text import sanitize


class Fatal(Exception):
    """An error that ends the run: one line on stderr, exit status 2."""


class UsageError(Fatal):
    """The command line is wrong: found before anything is asked of the server."""


@dataclass
class Streams:
    """Where the run reads and writes (the real ones, or test doubles)."""

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    def out(self, line: str) -> None:
        self.stdout.write(sanitize(line) + "\n")
        self.stdout.flush()

    def err(self, line: str) -> None:
        self.stderr.write(sanitize(line) + "\n")
        self.stderr.flush()

    def binaryOut(self) -> BinaryIO:
        """Standard output for bytes (``get -o -``)."""
        self.stdout.flush()
        return self.stdout.buffer  # type: ignore[attr-defined]
