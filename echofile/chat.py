"""
Who is online, and delivering chat between them.

L{ChatService} is the one object that knows who is logged in; sessions join
it through the realm when they log in and leave when they log out, so no
protocol reaches into another.  Each session gets events through
L{IChatListener.deliverEvent}; what it does not take at once goes into its
own bounded L{EventQueue}.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

from twisted.application.service import Service
from twisted.logger import Logger
from zope.interface import Interface

from echofile.text import sanitize

#: The event a session gets first after it lost events to a full queue.
DROPPED_NOTICE = "*[server]: {count} events dropped, this session did not keep up."

class IChatListener(Interface):
    """A logged-in session, as the chat service sees it."""

    def deliverEvent(line: str) -> None:
        """Show C{line} (a complete ``*`` event line, without CR LF) when the session can."""


class EventQueue:
    """
    Events waiting for a session that cannot take them now (it is sending a
    body, or its client is not reading).

    Bounded in count and in bytes; when full the oldest events are dropped,
    and the next drain starts with one notice saying how many were lost.
    """

    def __init__(self, maxEvents: int = 100, maxBytes: int = 64 * 1024) -> None:
        self.maxEvents = maxEvents
        self.maxBytes = maxBytes
        # Made on the first event: most sessions never queue one, and an empty
        # deque costs most of a kilobyte per session.
        self._events: deque[str] | None = None
        self._bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events) if self._events is not None else 0

    @property
    def size(self) -> int:
        return self._bytes

    def push(self, line: str) -> None:
        if self._events is None:
            self._events = deque()
        self._events.append(line)
        self._bytes += len(line)
        while len(self._events) > self.maxEvents or self._bytes > self.maxBytes:
            self._bytes -= len(self._events.popleft())
            self.dropped += 1

    def drain(self) -> list[str]:
        """Everything queued, oldest first, after a notice if some were dropped."""
        lines = [DROPPED_NOTICE.format(count=self.dropped)] if self.dropped else []
        if self._events is not None:
            lines.extend(self._events)
        self._events = None
        self._bytes = 0
        self.dropped = 0
        return lines


class NotOnline(Exception):
    """MSG to a user who has no session."""


class ChatService(Service):
    """
    Presence and delivery.  A user may be logged in from several sessions:
    MSG reaches all of them, WHO names the user once.
    """

    name = "chat"
    _log = Logger()

    def __init__(self) -> None:
        self._sessions: dict[str, list[IChatListener]] = {}

    def join(self, user: str, session: IChatListener) -> None:
        self._sessions.setdefault(user, []).append(session)

    def leave(self, user: str, session: IChatListener) -> None:
        sessions = self._sessions.get(user, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._sessions.pop(user, None)

    def online(self) -> list[str]:
        """User names with at least one session, sorted."""
        return sorted(self._sessions)

    def say(self, sender: str, origin: IChatListener, text: str) -> int:
        """C{text} to every logged-in session but C{origin}; returns how many got it."""
        line = f"*{sender}: {sanitize(text)}"
        recipients = [s for sessions in self._sessions.values() for s in sessions if s is not origin]
        self._deliver(line, recipients)
        self._log.info(
            "chat: {sender} said {size} characters to {count} sessions",
            sender=sender, size=len(text), count=len(recipients),
        )
        return len(recipients)

    def message(self, sender: str, recipient: str, text: str) -> int:
        """C{text} to every session of C{recipient}, or raise L{NotOnline}."""
        sessions = list(self._sessions.get(recipient, ()))
        if not sessions:
            raise NotOnline(recipient)
        self._deliver(f"*{sender} (private): {sanitize(text)}", sessions)
        self._log.info(
            "chat: {sender} sent {size} characters privately to {recipient} ({count} sessions)",
            sender=sender, size=len(text), recipient=recipient, count=len(sessions),
        )
        return len(sessions)

    def _deliver(self, line: str, sessions: Iterable[IChatListener]) -> None:
        for session in sessions:
            try:
                session.deliverEvent(line)
            except Exception:
                self._log.failure("chat: delivery to {session} failed", session=session)
