"""
Who is online, under which chat name, and delivering chat between them.

L{IChat} is what the realm and the sessions talk to: sessions join it
through the realm when they log in and leave when they log out, so no
protocol reaches into another and none knows which implementation it talks
to.  L{ChatService} is the in-process one (one instance); a broker-backed
one can span several instances behind the same interface.  Each session
gets events through L{IChatListener.deliverEvent}; what it does not take at
once goes into its own bounded L{EventQueue}.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from echofile import metrics
from echofile.text import sanitize

#: The event a session gets first after it lost events to a full queue.
DROPPED_NOTICE = "*[server]: {count} events dropped, this session did not keep up."
#: The event every other session gets when a guest picks a nickname.
RENAMED_NOTICE = "*[server]: {old} is now {new}."
#: Guest chat names start with it; it is outside the user-name alphabet, so a guest never passes for an account.
GUEST_PREFIX = "~"

class IChatListener(Interface):
    """A logged-in session, as the chat service sees it."""

    def deliverEvent(line: str, data: bytes | None = None) -> None:
        """
        Show C{line} (a complete ``*`` event line, without CR LF) when the session can.

        @param data: C{line} as it goes on the wire (UTF-8, CR LF), when the
            caller encoded it once for every receiver (L{deliver}); None: the
            session encodes it itself.
        """


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
            metrics.CHAT_EVENTS_DROPPED.inc()

    def drain(self) -> list[str]:
        """Everything queued, oldest first, after a notice if some were dropped."""
        lines = [DROPPED_NOTICE.format(count=self.dropped)] if self.dropped else []
        if self._events is not None:
            lines.extend(self._events)
        self._events = None
        self._bytes = 0
        self.dropped = 0
        return lines


class ChatUnavailable(Exception):
    """
    The chat backend cannot be reached now (a broker that is down).

    Chat commands then fail with it; logging in and the file commands do
    not depend on chat and keep working.
    """


class NotOnline(Exception):
    """MSG to a chat name that no other session has."""


class NicknameInUse(Exception):
    """NICK to a name another online session has (compared case-insensitively)."""


class IChat(Interface):
    """
    Presence and delivery, as the realm and the sessions use them.

    Every method may return its result or a Deferred firing with it (a
    networked backend answers later), and may fail with L{ChatUnavailable}
    (except L{join} and L{leave}: presence is kept even while the backend is
    away, so logging in never depends on it).  Sessions are identified by
    the L{IChatListener} that receives their events.
    """

    available = Attribute(
        "True while the backend can be reached; while False the chat requests fail with ChatUnavailable."
    )

    def join(session: IChatListener, account: str, guest: bool) -> Any:
        """
        Add C{session} to presence; returns its chat name.

        A named account chats under C{account}; a guest session gets a
        C{~guest<N>} name no online session has.
        """

    def leave(session: IChatListener) -> None:
        """Remove C{session} from presence (its nickname is free again); harmless if it is not there."""

    def rename(session: IChatListener, nickname: str) -> Any:
        """
        Give the guest C{session} the chat name C{~<nickname>} and tell
        every other session; returns the new chat name.

        @param nickname: already valid (the protocol checks the syntax).
        @raise NicknameInUse: another online session has that name, in any case.
        """

    def say(session: IChatListener, text: str) -> Any:
        """C{text} to every other logged-in session; returns how many got it."""

    def message(session: IChatListener, recipient: str, text: str) -> Any:
        """
        C{text} to every session whose chat name is exactly C{recipient},
        never C{session} itself; returns how many got it.

        @raise NotOnline: no such session other than C{session}.
        """

    def online() -> Any:
        """The chat names with at least one session, each once, sorted."""


class GuestNumbers:
    """
    The smallest number no online guest name uses, without scanning them all.

    Numbers at or above C{_next} were never handed out; released ones below
    it wait in a heap.  A number may be taken by a nickname meanwhile
    (C{NICK guest5}), so a candidate is checked before it is handed out, and
    the nickname gives it back when it goes.  The heap holds each number at
    most once, so it never outgrows the highest number used.
    """

    def __init__(self) -> None:
        self._next = 1
        self._free: list[int] = []
        self._freeSet: set[int] = set()

    def take(self, isTaken: Callable[[int], bool]) -> int:
        while self._free:
            number = heapq.heappop(self._free)
            self._freeSet.discard(number)
            if not isTaken(number):
                return number
        while isTaken(self._next):
            self._next += 1
        number, self._next = self._next, self._next + 1
        return number

    def release(self, number: int) -> None:
        if number < self._next and number not in self._freeSet:
            self._freeSet.add(number)
            heapq.heappush(self._free, number)


_GUEST_NUMBER = re.compile(r"guest([1-9][0-9]*)")


@implementer(IChat)
class ChatService(Service):
    """
    The in-process L{IChat}: presence and delivery within this instance.

    A named account may be logged in from several sessions: MSG reaches all
    of them, WHO names it once.  Each guest session has its own C{~} name.
    Chat text is never logged at info; the debug events give the sender, the
    number of recipients and the length, never the text.
    """

    name = "chat"
    available = True
    _log = Logger()

    def __init__(self) -> None:
        self._names: dict[IChatListener, str] = {}
        self._sessions: dict[str, list[IChatListener]] = {}
        # The guests' names without the prefix, lower-cased: what must be unique.
        self._guests: dict[str, IChatListener] = {}
        self._numbers = GuestNumbers()

    def join(self, session: IChatListener, account: str, guest: bool) -> str:
        if session in self._names:
            return self._names[session]
        if guest:
            number = self._numbers.take(lambda n: f"guest{n}" in self._guests)
            self._guests[f"guest{number}"] = session
            name = f"{GUEST_PREFIX}guest{number}"
        else:
            name = account
        self._names[session] = name
        self._sessions.setdefault(name, []).append(session)
        return name

    def leave(self, session: IChatListener) -> None:
        name = self._names.pop(session, None)
        if name is None:
            return
        self._forget(name, session)

    def _forget(self, name: str, session: IChatListener) -> None:
        sessions = self._sessions.get(name, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._sessions.pop(name, None)
        if name.startswith(GUEST_PREFIX):
            key = name[len(GUEST_PREFIX):].lower()
            if self._guests.get(key) is session:
                del self._guests[key]
                number = _GUEST_NUMBER.fullmatch(key)
                if number is not None:
                    self._numbers.release(int(number.group(1)))

    def rename(self, session: IChatListener, nickname: str) -> str:
        old = self._names[session]
        if not old.startswith(GUEST_PREFIX):
            raise ValueError(f"{old} is an account, not a guest: accounts have no nicknames")
        holder = self._guests.get(nickname.lower())
        if holder is not None and holder is not session:
            raise NicknameInUse(nickname)
        new = GUEST_PREFIX + nickname
        if new == old:
            return new
        self._forget(old, session)
        self._guests[nickname.lower()] = session
        self._names[session] = new
        self._sessions.setdefault(new, []).append(session)
        self._deliver(RENAMED_NOTICE.format(old=old, new=new), self._others(session))
        return new

    def online(self) -> list[str]:
        return sorted(self._sessions)

    def say(self, session: IChatListener, text: str) -> int:
        sender = self._names[session]
        recipients = self._others(session)
        self._deliver(f"*{sender}: {sanitize(text)}", recipients)
        return len(recipients)

    def message(self, session: IChatListener, recipient: str, text: str) -> int:
        sender = self._names[session]
        sessions = [s for s in self._sessions.get(recipient, ()) if s is not session]
        if not sessions:
            raise NotOnline(recipient)
        self._deliver(f"*{sender} (private): {sanitize(text)}", sessions)
        return len(sessions)

    def _others(self, session: IChatListener) -> list[IChatListener]:
        return [s for s in self._names if s is not session]

    def _deliver(self, line: str, sessions: Iterable[IChatListener]) -> None:
        deliver(line, sessions, self._log)


def deliver(line: str, sessions: Iterable[IChatListener], log: Logger) -> None:
    """
    Hand C{line} to each session (counted in C{echofile_chat_events_delivered_total};
    a session's full queue counts what it drops); one that fails is logged, the others still get it.

    The line is encoded once here, not once per receiver: a SAY to thousands
    of sessions is one loop of sends (docs/performance.md, "Chat fan-out").
    """
    data = line.encode("utf-8") + b"\r\n"
    delivered = 0
    for session in sessions:
        try:
            session.deliverEvent(line, data)
        except Exception:
            log.failure("chat: delivery to {session} failed", session=session)
        else:
            delivered += 1
    if delivered:
        metrics.CHAT_EVENTS_DELIVERED.inc(delivered)
