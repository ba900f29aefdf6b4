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
from echofile.htpasswd import HtpasswdChecker, bcryptCost, readHtpasswd
from support import PASSWORD, makeFilesFactory
from test_loopback import Server


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
