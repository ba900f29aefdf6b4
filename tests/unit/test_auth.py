"""Accounts: default password, the checker over strcred checkers, the realm."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.cred import strcred
from twisted.cred.error import UnauthorizedLogin

from echofile.auth import AccountsChecker, Credentials, defaultPassword, login, makePortal


def test_password_from_environment():
    assert defaultPassword({"ECHOFILE_PASSWORD": "s3cret"}) == ("s3cret", False)


def test_random_password_when_unset_or_blank():
    first, generated = defaultPassword({})
    second, _ = defaultPassword({"ECHOFILE_PASSWORD": "  "})
    assert generated and len(first) >= 16 and first != second


@pytest_twisted.inlineCallbacks
def test_default_account_and_strcred_checkers(tmp_path):
    db = tmp_path / "users"
    db.write_text("carol:file pass\n")
    checkers = [
        strcred.makeChecker("memory:alice:mem pass:guest:hijack"),
        strcred.makeChecker(f"file:{db}"),
    ]
    checker = AccountsChecker("guest pass", checkers)
    assert (yield checker.requestAvatarId(Credentials("guest", "guest pass"))) == "guest"
    assert (yield checker.requestAvatarId(Credentials("alice", "mem pass"))) == "alice"
    assert (yield checker.requestAvatarId(Credentials("carol", "file pass"))) == "carol"
    for name, password in [("guest", "hijack"), ("alice", "file pass"), ("carol", "mem pass"), ("dave", "x")]:
        with pytest.raises(UnauthorizedLogin):
            yield checker.requestAvatarId(Credentials(name, password))


@pytest_twisted.inlineCallbacks
def test_portal_hands_out_a_share(served):
    portal = makePortal(str(served), "pw")
    interface, avatar, logout = yield login(portal, "guest", "pw")
    assert avatar.user == "guest"
    assert avatar.root == str(served.resolve())
    logout()


@pytest_twisted.inlineCallbacks
def test_no_guest_refuses_the_default_account(tmp_path):
    """--no-guest: 'guest' is refused whatever the password (even one an --auth entry named guest has)."""
    checker = AccountsChecker(None, [strcred.makeChecker("memory:alice:pw:guest:pw")])
    assert (yield checker.requestAvatarId(Credentials("alice", "pw"))) == "alice"
    for password in ["pw", "", "None"]:
        with pytest.raises(UnauthorizedLogin):
            yield checker.requestAvatarId(Credentials("guest", password))
