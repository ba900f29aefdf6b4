"""
A failed AUTH is answered the failure delay after the AUTH arrived, however
long the check itself took (found by the outside attack on the security
round: account names could be told from unknown ones by the timing).
"""

from __future__ import annotations

import os

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock, deferLater
from zope.interface import implementer

from echofile.auth import makePortal
from echofile.chat import ChatService
from echofile.files import FilesFactory
from echofile.limits import ConnectionLimiter
from support import connect, replies


@implementer(ICredentialsChecker)
class CostlyChecker:
    """Says no to everyone, taking C{costs[name]} seconds of the clock (bcrypt at different costs)."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, clock: Clock, costs: dict[bytes, float]) -> None:
        self.clock = clock
        self.costs = costs

    def requestAvatarId(self, credentials):
        def no():
            raise UnauthorizedLogin()

        return deferLater(self.clock, self.costs.get(credentials.username, 0.25), no)


def answeredAfter(clock: Clock, served, user: bytes) -> float:
    chat = ChatService()
    checker = CostlyChecker(clock, {b"cheap": 0.0, b"costly": 0.25})
    factory = FilesFactory(makePortal(os.fspath(served), None, [checker], chat), clock, ConnectionLimiter(10, 10, "files"), chat)
    protocol, transport = connect(factory)
    protocol.dataReceived(b"USER " + user + b"\r\n")
    replies(transport)
    start = clock.seconds()
    protocol.dataReceived(b"AUTH wrong\r\n")
    for _ in range(300):
        clock.advance(0.01)
        if replies(transport) == [b"!Bad password."]:
            return round(clock.seconds() - start, 2)
    raise AssertionError("no answer within 3 s of the clock")


def test_failed_auth_answered_at_the_same_time_whatever_the_check_cost(served):
    """
    With an htpasswd file of mixed bcrypt costs, a wrong password for a cheap
    account was answered 1.004 s after AUTH and one for an unknown name
    (checked against the dummy of the file's highest cost) 1.24 s after.
    """
    # A cheap account (checked at once) and an unknown name (checked against
    # the costlier dummy) must not be told apart by when !Bad password. comes.
    assert answeredAfter(Clock(), served, b"cheap") == answeredAfter(Clock(), served, b"costly") == 1.0
