"""
Input holds and the event outbox of a file-protocol session.

Reading is held (the LineReceiver itself is paused, not only the
transport, so already buffered pipelined lines wait too) while a command
is still running (AUTH's check and failure delay, a FILE body) and while
the transport's write buffer is full.  Replies therefore come in command
order, and a client that does not read cannot make the server buffer
without bound.

Chat events that arrive while a body is being sent or while the client
is not reading wait in a bounded queue and follow the next complete reply.
The others go straight into the socket of a plain TCP transport whose
buffer is empty (L{HeldInput.deliverEvent}): a SAY to thousands of sessions
is then one send per receiver, not Twisted's buffer, two epoll_ctl calls
and a reactor turn each.
"""

from __future__ import annotations

import socket

from twisted.protocols.basic import LineReceiver

from echofile.chat import EventQueue
from echofile.listing import ListingSender
from echofile.transfer import BodySender
from echofile.twistedinternals import directSocket, unframedInput, writeNow

#: Input read ahead (not run) while a HASH waits, before the transport stops reading.
HELD_INPUT = 64 * 1024

#: No hold: one shared empty frozenset (an empty set object is 216 bytes, per idle session).
_NO_HOLDS: frozenset[str] = frozenset()


class HeldInput(LineReceiver):
    """
    Holds, producer registration and the outbox; the session life cycle
    (L{echofile.session.LineSession}) says when the session is over.
    """

    _ending: bool
    _connected: bool
    _inputEnded: bool

    def __init__(self) -> None:
        # Why input is held ("command", "output", "hash"); the shared empty
        # frozenset until the first hold, which most sessions reach, but idle ones never do.
        self._holds: set[str] | frozenset[str] = _NO_HOLDS
        self._readingPaused = False  # did a hold pause the transport?
        self._producing = False  # are we the transport's registered producer?
        self._transfer: BodySender | ListingSender | None = None  # a body or listing being sent
        self._queue: EventQueue | None = None  # made by the first event that has to wait
        self._socket: socket.socket | None = None  # a plain TCP transport's socket, for direct sends (L{_send})

    @property
    def _events(self) -> EventQueue:
        """The chat events waiting for this session (made on first use: most sessions never queue one)."""
        if self._queue is None:
            self._queue = EventQueue()
        return self._queue

    def _closeIfInputDone(self) -> None:
        raise NotImplementedError

    # -- flow control ----------------------------------------------------------

    def _registerAsProducer(self) -> None:
        self.transport.registerProducer(self, True)
        self._producing = True

    def _sendDirectly(self) -> None:
        """From now on, replies may go straight to the socket (plain TCP only; see L{_send})."""
        self._socket = directSocket(self.transport)

    def _stopSendingDirectly(self) -> None:
        self._socket = None

    def _unregisterAsProducer(self) -> None:
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def _hold(self, reason: str, keepReading: bool = False) -> None:
        """
        Run no further command until L{_release}.  Unless C{keepReading},
        the transport stops reading too; with it, input is still read (so a
        client that goes away is noticed) but only up to L{HELD_INPUT}.
        """
        if not self._holds:
            self.paused = True
            self._holds = set()
        if not keepReading:
            self._pauseReading()
        self._holds.add(reason)  # type: ignore[union-attr]

    def _pauseReading(self) -> None:
        if not self._readingPaused:
            self._readingPaused = True
            self.transport.pauseProducing()

    def _release(self, reason: str) -> None:
        if reason in self._holds:
            self._holds.discard(reason)  # type: ignore[union-attr]
        if self._holds or self._ending or not self._connected:
            return
        self.paused = False
        if self._readingPaused:
            self._readingPaused = False
            if not self._inputEnded:
                self.transport.resumeProducing()
        self.dataReceived(b"")  # run lines that arrived meanwhile
        self._closeIfInputDone()

    def _bufferedInput(self) -> int:
        """Bytes received but not yet framed into a line."""
        return len(unframedInput(self))

    def _limitHeldInput(self) -> None:
        if self._holds and self._bufferedInput() > HELD_INPUT:
            self._pauseReading()  # enough pipelined input while a HASH waits

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: stop taking commands."""
        self._hold("output")

    def resumeProducing(self) -> None:
        self._release("output")
        self._flushEvents()

    def _sendingStarted(self, sender: BodySender | ListingSender) -> None:
        """A body or listing takes over the transport: its producer, not the session."""
        self._transfer = sender
        self._unregisterAsProducer()

    def _sendingEnded(self) -> None:
        """The body or listing is handed over: the session is the transport's producer again."""
        self._transfer = None
        self._registerAsProducer()

    # -- output ----------------------------------------------------------------

    def reply(self, line: str) -> None:
        self._send(line.encode("utf-8") + b"\r\n")

    def _replyLines(self, lines: list[str]) -> None:
        """A header and the lines it announces (LIST, WHO), in one write: no event can come between."""
        self._send("".join(line + "\r\n" for line in lines).encode("utf-8"))

    def _send(self, data: bytes) -> None:
        """Write C{data}: on plain TCP with nothing buffered, straight to the socket (L{writeNow})."""
        writeNow(self._socket, self.transport, data)

    def deliverEvent(self, line: str, data: bytes | None = None) -> None:
        """
        A chat event: now if the client can take it, else after the body or once it reads.

        "Now" is straight into the socket when nothing waits in the
        transport's buffer (L{writeNow}): one send per receiver.  What the
        socket does not take, and everything while something is buffered or
        a close is pending, goes through C{transport.write}: the order is
        kept, and a full buffer still pauses the session (L{pauseProducing}),
        so a client that does not read is bounded as before.
        """
        if self._ending:
            return
        if self._transfer is not None or "output" in self._holds or self._queue:
            self._events.push(line)
            return
        writeNow(self._socket, self.transport, line.encode("utf-8") + b"\r\n" if data is None else data)

    def _flushEvents(self) -> None:
        if self._transfer is None and not self._ending and self._queue:
            for line in self._queue.drain():
                self.reply(line)
