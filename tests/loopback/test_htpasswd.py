"""bcrypt htpasswd accounts, with files made by the real `htpasswd` tool."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.cred import strcred
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor

from echofile.auth import Credentials
from echofile.htpasswd import MAX_DUMMY_COST, HtpasswdChecker, bcryptCost, dummyCostFor, readHtpasswd
from support import PASSWORD, makeFilesFactory
from loopbackhelpers import Server


def htpasswd(path, user: str, password: str, *extra: str) -> None:
    tool = shutil.which("htpasswd")
    assert tool, "htpasswd not found: install Debian's apache2-utils"
    create = ["-c"] if not os.path.exists(path) else []
    subprocess.run([tool, *create, "-b", *extra, str(path), user, password], check=True, capture_output=True)


@pytest.fixture
def passwords(tmp_path):
    path = tmp_path / "echofile.htpasswd"
    htpasswd(path, "alice", "wonder land", "-B", "-C", "5")
    htpasswd(path, "md5user", "pw", "-m")
    return path


def test_only_bcrypt_lines_are_used(passwords):
    users, skipped = readHtpasswd(str(passwords))
    assert list(users) == [b"alice"] and users[b"alice"].startswith(b"$2y$")
    assert skipped == [b"md5user"]


@pytest_twisted.inlineCallbacks
def test_strcred_plugin_checks_passwords(passwords):
    checker = strcred.makeChecker(f"htpasswd:{passwords}")
    assert isinstance(checker, HtpasswdChecker)
    assert (yield checker.requestAvatarId(Credentials("alice", "wonder land"))) == b"alice"
    for name, password in [("alice", "wonder"), ("md5user", "pw"), ("nobody", "x")]:
        with pytest.raises(UnauthorizedLogin):
            yield checker.requestAvatarId(Credentials(name, password))


@pytest_twisted.inlineCallbacks
def test_file_is_reread_when_it_changes(passwords):
    checker = HtpasswdChecker(str(passwords))
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(Credentials("bob", "builder"))
    htpasswd(passwords, "bob", "builder", "-B", "-C", "5")
    assert (yield checker.requestAvatarId(Credentials("bob", "builder"))) == b"bob"


def test_plugin_refuses_bad_files(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("md5user:$apr1$abc$def\n")
    for argument in ["", str(tmp_path / "missing"), str(empty)]:
        with pytest.raises(ValueError):
            strcred.makeChecker(f"htpasswd:{argument}")


@pytest.fixture
def slowServer(served, tmp_path):
    path = tmp_path / "slow.htpasswd"
    htpasswd(path, "slow", "pw", "-B", "-C", "13")  # about half a second of bcrypt per check
    factory = makeFilesFactory(served, reactor, checkers=[HtpasswdChecker(str(path))])
    server = Server(factory)
    pytest_twisted.blockon(server.start())
    yield server
    pytest_twisted.blockon(server.stop())


@pytest_twisted.inlineCallbacks
def test_a_slow_check_does_not_delay_other_sessions(slowServer):
    slow = yield slowServer.connect()
    other = yield slowServer.connect()
    yield slow.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
    yield other.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
    slow.transport.write(b"USER slow\nAUTH pw\n")
    yield slow.until(lambda d: b"#User slow accepted" in d)
    # While bcrypt runs in a worker thread, another session logs in and is served.
    other.transport.write(b"AUTH " + PASSWORD.encode() + b"\nLIST\nHELP\n")
    yield other.until(lambda d: d.endswith(b"MSG, NICK, QUIT, RESUME, SAY, USER, WHO.\r\n"))
    assert b"#You are logged in." not in slow.data  # the slow check is still running
    yield slow.until(lambda d: d.endswith(b"#You are logged in.\r\n"))


@pytest_twisted.inlineCallbacks
def test_unknown_users_cost_as_much_as_known_ones(passwords):
    """The dummy hash for unknown names has the file's own cost (htpasswd -B uses 5)."""
    checker = HtpasswdChecker(str(passwords))
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(Credentials("nobody", "x"))
    assert bcryptCost(checker._dummyHash) == bcryptCost(readHtpasswd(str(passwords))[0][b"alice"]) == 5


LONG = "x" * 60 + "-long-password-" + "y" * 25  # 100 bytes: bcrypt only ever uses the first 72


@pytest_twisted.inlineCallbacks
def test_passwords_over_72_bytes_are_checked_as_apache_does(passwords):
    """htpasswd -B hashes the first 72 bytes; bcrypt 5 would raise for the rest, not answer."""
    assert len(LONG.encode()) == 100
    htpasswd(passwords, "long", LONG, "-B", "-C", "5")
    checker = HtpasswdChecker(str(passwords))
    assert (yield checker.requestAvatarId(Credentials("long", LONG))) == b"long"
    assert (yield checker.requestAvatarId(Credentials("long", LONG[:72] + "whatever"))) == b"long"
    for name, password in [("long", LONG[:71]), ("alice", LONG), ("nobody", LONG), ("nobody", "z" * 1000)]:
        with pytest.raises(UnauthorizedLogin):  # a refusal, never a ValueError
            yield checker.requestAvatarId(Credentials(name, password))


@pytest_twisted.inlineCallbacks
def test_unknown_name_with_a_long_password_is_a_slow_bad_password(passwords):
    """
    The oracle: an unknown name with a 100-byte password was answered
    !Internal error. at once, uncounted; now it is a failed login like any other.
    """
    from echofile.lockout import LoginPenalties

    penalties = LoginPenalties(reactor, maxFailures=1, window=600, duration=600)
    factory = makeFilesFactory(
        passwords.parent, reactor, checkers=[HtpasswdChecker(str(passwords))], penalties=penalties,
    )
    server = Server(factory)
    yield server.start()
    try:
        client = yield server.connect()
        yield client.until(lambda d: d.endswith(b"#Server Ready.\r\n"))
        client.transport.write(b"USER nobody\nAUTH " + LONG.encode() + b"\n")
        yield client.until(lambda d: d.endswith(b"!Bad password.\r\n") or b"!Internal error." in d)
        assert b"!Internal error." not in client.data
        assert penalties.isLockedOut("127.0.0.1")
    finally:
        yield server.stop()


def test_the_dummy_cost_follows_the_file_within_a_bound():
    def hashOfCost(cost):
        return b"$2y$%02d$" % cost + b"." * 53

    assert dummyCostFor({}) == 5
    assert dummyCostFor({b"a": hashOfCost(5), b"b": hashOfCost(12)}) == 12
    assert dummyCostFor({b"a": hashOfCost(31)}) == MAX_DUMMY_COST == 17  # htpasswd -C goes up to 17


@pytest_twisted.inlineCallbacks
def test_the_dummy_hash_is_made_again_only_when_the_highest_cost_changes(passwords):
    checker = HtpasswdChecker(str(passwords))
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(Credentials("nobody", "x"))
    first = checker._dummyHash
    htpasswd(passwords, "bob", "builder", "-B", "-C", "4")  # the file changed, its highest cost did not
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(Credentials("nobody", "x"))
    assert checker._dummyHash is first
    htpasswd(passwords, "carol", "c", "-B", "-C", "6")
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(Credentials("nobody", "x"))
    assert bcryptCost(checker._dummyHash) == 6


@pytest_twisted.inlineCallbacks
def test_a_file_that_goes_missing_keeps_the_accounts_and_says_so_once(passwords, logged):
    checker = HtpasswdChecker(str(passwords))
    assert (yield checker.requestAvatarId(Credentials("alice", "wonder land"))) == b"alice"
    passwords.rename(passwords.with_suffix(".moved"))
    for _ in range(3):
        assert (yield checker.requestAvatarId(Credentials("alice", "wonder land"))) == b"alice"
        with pytest.raises(UnauthorizedLogin):
            yield checker.requestAvatarId(Credentials("nobody", "x"))
    complaints = [e for e in logged if "cannot read" in e.get("log_format", "")]
    assert len(complaints) == 1 and complaints[0]["path"] == str(passwords) and complaints[0]["count"] == 1
    passwords.with_suffix(".moved").rename(passwords)
    assert (yield checker.requestAvatarId(Credentials("alice", "wonder land"))) == b"alice"
    assert any("readable again" in e.get("log_format", "") for e in logged)


@pytest_twisted.inlineCallbacks
def test_the_accounts_read_at_start_up_are_kept_if_the_file_goes_before_the_first_login(passwords):
    """
    ``--auth htpasswd:PATH`` reads the file at start-up (to refuse a bad
    one); those accounts are the ones "read last" if it becomes unreadable
    before anyone logs in.  They were thrown away: every account failed.
    """
    checker = strcred.makeChecker(f"htpasswd:{passwords}")
    passwords.rename(passwords.with_suffix(".moved"))
    assert (yield checker.requestAvatarId(Credentials("alice", "wonder land"))) == b"alice"


def test_plugin_errors_name_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"not a regular file: {folder}"):
        strcred.makeChecker(f"htpasswd:{folder}")
    unreadable = tmp_path / "unreadable"
    htpasswd(unreadable, "alice", "x", "-B", "-C", "4")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("builtins.open", refuse)  # root reads every file, whatever its mode
    with pytest.raises(ValueError, match=f"cannot read htpasswd file {unreadable}: Permission denied"):
        strcred.makeChecker(f"htpasswd:{unreadable}")
