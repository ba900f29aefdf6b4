"""
The session talks to any IChat: one that is unavailable, one that answers
later (as a broker would), and the factory never makes a chat of its own.
"""

from __future__ import annotations

import os

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from echofile import wire
from echofile.auth import makePortal
from echofile.chat import ChatService, ChatUnavailable, IChat, IChatListener, NotOnline
from echofile.files import FilesFactory
from echofile.limits import ConnectionLimiter
from support import PASSWORD, connect, drainTransfer, loggedIn, makeFilesFactory, replies

UNAVAILABLE = wire.error(wire.CHAT_UNAVAILABLE).encode()


@implementer(IChat)
class UnavailableChat:
    """A backend that cannot be reached: presence is kept, every chat request fails."""

    available = False

    def __init__(self) -> None:
        self.joined: list[IChatListener] = []

    def join(self, session: IChatListener, account: str, guest: bool) -> str:
        self.joined.append(session)
        return "~guest1" if guest else account

    def leave(self, session: IChatListener) -> None:
        self.joined.remove(session)

    def rename(self, session, nickname):
        raise ChatUnavailable()

    def say(self, session, text):
        return fail(ChatUnavailable())  # as a Deferred, the way a networked backend fails

    def message(self, session, recipient, text):
        raise ChatUnavailable()

    def online(self):
        raise ChatUnavailable()


@implementer(IChat)
class LateChat:
    """The in-process service, but every answer waits until the test releases it (like a broker round trip)."""

    available = True

    def __init__(self) -> None:
        self.real = ChatService()
        self.pending: list[tuple[Deferred, object]] = []

    def _later(self, call, *args):
        d: Deferred = Deferred()
        try:
            result = succeed(call(*args))
        except Exception as e:
            result = fail(e)
        self.pending.append((d, result))
        return d

    def answerAll(self) -> None:
        """Answer what was asked so far (not what those answers make the sessions ask next)."""
        pending, self.pending = self.pending, []
        for d, result in pending:
            result.chainDeferred(d)

    def join(self, session, account, guest):
        return self._later(self.real.join, session, account, guest)

    def leave(self, session):
        self.real.leave(session)

    def rename(self, session, nickname):
        return self._later(self.real.rename, session, nickname)

    def say(self, session, text):
        return self._later(self.real.say, session, text)

    def message(self, session, recipient, text):
        return self._later(self.real.message, session, recipient, text)

    def online(self):
        return self._later(self.real.online)


def test_fakes_and_the_service_provide_ichat():
    for chat in (ChatService(), UnavailableChat(), LateChat()):
        assert verifyObject(IChat, chat)


def test_unavailable_chat_commands(served):
    chat = UnavailableChat()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice="pw")
    factory = makeFilesFactory(served, Clock(), checkers=[checker], chat=chat)
    guest, guestT = loggedIn(factory, "guest", 1)
    alice, aliceT = loggedIn(factory, "alice", 2)
    assert chat.joined == [guest, alice]
    guest.dataReceived(b"SAY hi\r\nMSG alice hi\r\nWHO\r\nNICK ada\r\n")
    assert replies(guestT) == [UNAVAILABLE] * 4
    assert replies(aliceT) == []


def test_unavailable_chat_leaves_files_working(served):
    factory = makeFilesFactory(served, Clock(), chat=UnavailableChat())
    guest, guestT = loggedIn(factory, "guest", 1)
    guest.dataReceived(b"WHO\r\nLIST docs\r\nFILE notes.txt\r\n")
    drainTransfer(guestT)
    assert replies(guestT) == [
        UNAVAILABLE, b"#1 entries in docs.", b"9 readme.txt",
        b"#Sending notes.txt (12 bytes).", b"hello notes\n", b"#File notes.txt sent successfully.",
    ]


def test_local_errors_come_before_unavailable(served):
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice="pw")
    factory = makeFilesFactory(served, Clock(), checkers=[checker], chat=UnavailableChat())
    protocol, transport = connect(factory, port=1)
    replies(transport)
    protocol.dataReceived(b"SAY hi\r\nWHO\r\nNICK ada\r\n")
    assert replies(transport) == [b"!You are not logged in."] * 3
    guest, guestT = loggedIn(factory, "guest", 2)
    guest.dataReceived(b"SAY\r\nMSG alice\r\nNICK\r\nNICK b@d\r\n")
    assert replies(guestT) == [
        b"!Usage: SAY <text>", b"!Usage: MSG <user> <text>", b"!Usage: NICK <name>", b"!Invalid user name.",
    ]
    alice, aliceT = loggedIn(factory, "alice", 3)
    alice.dataReceived(b"NICK ada\r\n")
    assert replies(aliceT) == [b"!Only guest sessions have nicknames."]


def test_unavailable_chat_leaves_the_session_on_logout(served):
    chat = UnavailableChat()
    factory = makeFilesFactory(served, Clock(), chat=chat)
    guest, _ = loggedIn(factory, "guest", 1)
    guest.dataReceived(b"QUIT\r\n")
    assert chat.joined == []


def test_a_late_chat_keeps_replies_in_command_order(served):
    chat = LateChat()
    factory = makeFilesFactory(served, Clock(), chat=chat)
    one, oneT = connect(factory, port=1)
    two, twoT = connect(factory, port=2)
    for protocol, transport in ((one, oneT), (two, twoT)):
        replies(transport)
        protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
        assert replies(transport) == []  # the login waits for the join
        chat.answerAll()
        assert replies(transport) == [b"#You are logged in."]
    one.dataReceived(b"NICK ada\r\nWHO\r\nMSG ~nobody x\r\nSAY hi\r\nHELP\r\n")
    seen = []
    while chat.pending:
        assert len(chat.pending) == 1  # one command at a time: the next waits for this answer
        chat.answerAll()
        seen.extend(replies(oneT))
    assert seen[:6] == [
        b"#You are now ~ada.", b"#2 users online.", b"~ada", b"~guest2", b"!No such user online: ~nobody.", b"#Said.",
    ]
    assert seen[6].startswith(b"#Commands: ")
    assert replies(twoT) == [b"*[server]: ~guest1 is now ~ada.", b"*~ada: hi"]


def test_a_late_chat_holds_the_next_command(served):
    chat = LateChat()
    factory = makeFilesFactory(served, Clock(), chat=chat)
    guest, transport = connect(factory, port=1)
    guest.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    chat.answerAll()
    replies(transport)
    guest.dataReceived(b"WHO\r\nHELP\r\n")
    assert replies(transport) == []  # HELP waits behind the unanswered WHO
    chat.answerAll()
    lines = replies(transport)
    assert lines[:2] == [b"#1 users online.", b"~guest1"] and lines[2].startswith(b"#Commands: ")


def test_a_late_answer_after_the_session_ended_is_not_written(served):
    chat = LateChat()
    factory = makeFilesFactory(served, Clock(), chat=chat)
    guest, transport = connect(factory, port=1)
    guest.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    chat.answerAll()
    guest.dataReceived(b"WHO\r\n")
    guest.connectionLost(None)
    replies(transport)
    chat.answerAll()
    assert transport.value() == b""


def test_a_late_join_after_the_session_left_leaves_again(served):
    chat = LateChat()
    factory = makeFilesFactory(served, Clock(), chat=chat)
    guest, transport = connect(factory, port=1)
    guest.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    guest.connectionLost(None)
    chat.answerAll()
    assert chat.real.online() == []


# -- wiring: one chat service --------------------------------------------------------------------


def test_the_factory_never_makes_its_own_chat(served):
    chat = ChatService()
    portal = makePortal(os.fspath(served), PASSWORD, [], chat)
    with pytest.raises(TypeError):
        FilesFactory(portal, Clock(), ConnectionLimiter(10, 10, "files"))  # type: ignore[call-arg]


def test_the_factory_refuses_a_chat_the_realm_does_not_use(served):
    portal = makePortal(os.fspath(served), PASSWORD, [], ChatService())
    with pytest.raises(ValueError):
        FilesFactory(portal, Clock(), ConnectionLimiter(10, 10, "files"), ChatService())
    with pytest.raises(ValueError):
        FilesFactory(makePortal(os.fspath(served), PASSWORD), Clock(), ConnectionLimiter(10, 10, "files"), ChatService())


def test_msg_not_online_is_a_domain_error():
    chat = ChatService()
    session = object()
    chat.join(session, "alice", guest=False)
    with pytest.raises(NotOnline):
        chat.message(session, "alice", "hi")
