"""
The readers of a file body's reply: FILE (L{FileReader}) and RESUME
(L{ResumeReader}), header, exactly I{size} raw bytes, CR LF, trailer, the
body going to a L{FileSink}.
"""

from __future__ import annotations

import typing
from typing import Callable

from twisted.python.failure import Failure

from echofile import wire
from echofile.client.errors import ProtocolViolation, TransferIncomplete
from echofile.client.reader import Channel, Reader, unexpected

#: A body whose sink failed is still read to its end (so the session goes on)
#: only when that costs at most this many bytes; beyond, the connection is dropped.
DRAIN_LIMIT = 16 * 1024 * 1024


class FileSink(typing.Protocol):
    """Where a file body goes: told its size first, then given it chunk by chunk."""

    def begin(self, size: int) -> None: ...

    def write(self, data: bytes) -> None: ...


class FileReader(Reader):
    """
    ``FILE name``: header, exactly I{size} raw bytes, CR LF, trailer.

    Fires with the size once the trailer arrived.  If the sink fails (disk
    full, or it refused the size) the rest of the body is still read, so the
    session stays usable, when that is at most L{DRAIN_LIMIT} bytes; a longer
    rest ends the session (L{abandoned}), and the request fails with the
    sink's own error either way.
    """

    def __init__(self, sink: FileSink, drainLimit: int = DRAIN_LIMIT) -> None:
        super().__init__()
        self._sink = sink
        self._drainLimit = drainLimit
        self._size = 0
        self._remaining = 0
        self._tail = b""  # collects the CR LF after the body
        self._stage = "header"
        self.sinkFailure: Failure | None = None

    @property
    def abandoned(self) -> bool:
        """The sink failed and the rest of the body is too long to read for nothing."""
        return self.sinkFailure is not None and self._remaining > self._drainLimit

    def lineReceived(self, channel: Channel, line: str) -> None:
        if self._stage == "header":
            header = self.parsed(self.parseHeader, line, "server announced a")
            if header is None:
                return
            body, announced = header
            self._size = self._remaining = body
            self.atReplyStart = False
            self._stage = "body"
            self._toSink(self._sink.begin, announced)
            channel.readRaw()
        elif self._stage == "trailer":
            if not line.startswith("#"):
                raise unexpected("unexpected line after a file body", line)
            self.finish(self.sinkFailure if self.sinkFailure is not None else self._size)
        else:
            raise ProtocolViolation(f"line in {self._stage} stage")

    def parseHeader(self, line: str) -> tuple[int, int] | None:
        """The body's length and the size the sink is told, or C{None} if C{line} is not the header."""
        header = wire.parseSending(line)
        return None if header is None else (header.size, header.size)

    def rawDataReceived(self, channel: Channel, data: bytes) -> bytes | None:
        if self._remaining:
            chunk, data = data[: self._remaining], data[self._remaining :]
            self._remaining -= len(chunk)
            self._toSink(self._sink.write, chunk)
            if self._remaining:
                return None
        need = 2 - len(self._tail)
        self._tail += data[:need]
        data = data[need:]
        if len(self._tail) < 2:
            return None
        if self._tail != b"\r\n":
            raise ProtocolViolation(f"file body not followed by CR LF but {self._tail!r}")
        self._stage = "trailer"
        return data

    def _toSink(self, method: Callable, argument: object) -> None:
        if self.sinkFailure is None:
            try:
                method(argument)
            except Exception:
                self.sinkFailure = Failure()

    def connectionLost(self, serverSaid: str | None) -> Failure:
        if self.sinkFailure is not None:
            return self.sinkFailure
        if self._stage == "body":
            return Failure(TransferIncomplete(self._size - self._remaining, self._size, serverSaid))
        return super().connectionLost(serverSaid)


class ResumeReader(FileReader):
    """
    ``RESUME offset name``: like FILE, but the body is the file from byte
    C{offset} on.  The sink is told the whole file's size (offset plus the
    body: it holds the first bytes already); a header for another offset is
    a protocol violation.  Fires with the body's length.
    """

    def __init__(self, sink: FileSink, offset: int, drainLimit: int = DRAIN_LIMIT) -> None:
        super().__init__(sink, drainLimit)
        self._offset = offset

    def parseHeader(self, line: str) -> tuple[int, int] | None:
        header = wire.parseResuming(line)
        if header is None:
            return None
        if header.offset != self._offset:
            raise ProtocolViolation(f"asked to resume at byte {self._offset}, the server sends from byte {header.offset}")
        return header.remaining, header.offset + header.remaining
