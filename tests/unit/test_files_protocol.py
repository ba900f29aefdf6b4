"""The file protocol against StringTransport, timers on a task.Clock."""

from __future__ import annotations

import os

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from echofile.files import HELP
from support import PASSWORD, connect, drainTransfer, makeFilesFactory, replies


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def session(served, clock):
    protocol, transport = connect(makeFilesFactory(served, clock))
    assert replies(transport) == [b"#Server Ready."]
    return protocol, transport


def send(protocol, data: bytes) -> None:
    protocol.dataReceived(data)


def login(protocol, transport) -> None:
    send(protocol, b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport) == [b"#You are logged in."]


def test_greeting_and_help(session):
    protocol, transport = session
    send(protocol, b"help\r\n")
    assert replies(transport) == [HELP.encode()]


def test_commands_are_case_insensitive_and_blanks_trimmed(session):
    protocol, transport = session
    send(protocol, b"  HeLp \t\r\n")
    assert replies(transport) == [HELP.encode()]


def test_bare_lf_and_empty_lines(session):
    protocol, transport = session
    send(protocol, b"\n\r\n   \nhelp\n")
    assert replies(transport) == [HELP.encode()]


def test_unknown_command(session):
    protocol, transport = session
    send(protocol, b"FETCH x\r\nh3lp\r\n")
    assert replies(transport) == [b"!Invalid command.", b"!Invalid command."]


def test_invalid_utf8(session):
    protocol, transport = session
    send(protocol, b"FILE \xc3\x28\x80\r\nHELP\r\n")
    assert replies(transport) == [b"!Invalid command.", HELP.encode()]


def test_quit(session):
    protocol, transport = session
    send(protocol, b"QUIT\r\nHELP\r\n")
    assert replies(transport) == [b"#Bye."]
    assert transport.disconnecting


def test_needs_login(session):
    protocol, transport = session
    send(protocol, b"FILE notes.txt\r\nLIST\r\n")
    assert replies(transport) == [b"!You are not logged in.", b"!You are not logged in."]


def test_auth_usage_and_already_logged_in(session):
    protocol, transport = session
    send(protocol, b"AUTH\r\n")
    assert replies(transport) == [b"!Usage: AUTH <password>"]
    login(protocol, transport)
    send(protocol, b"AUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport) == [b"!Already logged in."]


def test_password_with_inner_spaces(session):
    protocol, transport = session
    assert " " in PASSWORD
    login(protocol, transport)


def test_failed_auth_is_answered_after_a_delay(session, clock):
    protocol, transport = session
    send(protocol, b"AUTH nope\r\nHELP\r\n")
    assert replies(transport) == []  # neither the answer nor the pipelined HELP yet
    clock.advance(0.99)
    assert replies(transport) == []
    clock.advance(0.02)
    assert replies(transport) == [b"!Bad password.", HELP.encode()]


def test_third_failure_closes(session, clock):
    protocol, transport = session
    for _ in range(2):
        send(protocol, b"AUTH nope\r\n")
        clock.advance(1)
        assert replies(transport) == [b"!Bad password."]
    send(protocol, b"AUTH nope\r\nHELP\r\n")
    clock.advance(1)
    assert replies(transport) == [b"!Too many failed attempts."]
    assert transport.disconnecting


def test_user_selects_an_account(served, clock):
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice="wonder land")
    protocol, transport = connect(makeFilesFactory(served, clock, checkers=[checker]))
    replies(transport)
    send(protocol, b"USER alice\r\nAUTH wonder land\r\n")
    assert replies(transport) == [b"#User alice accepted, send AUTH.", b"#You are logged in."]
    assert protocol.avatar.user == "alice"


def test_user_bytes_checker_from_file(served, clock, tmp_path):
    from twisted.cred.checkers import FilePasswordDB

    db = tmp_path / "passwd"
    db.write_bytes(b"bob:builder\n")
    protocol, transport = connect(makeFilesFactory(served, clock, checkers=[FilePasswordDB(os.fspath(db))]))
    replies(transport)
    send(protocol, b"USER bob\r\nAUTH builder\r\n")
    assert replies(transport) == [b"#User bob accepted, send AUTH.", b"#You are logged in."]
    assert protocol.avatar.user == "bob"


def test_unknown_user_is_accepted_then_fails(session, clock):
    protocol, transport = session
    send(protocol, b"USER mallory\r\nAUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport) == [b"#User mallory accepted, send AUTH."]
    clock.advance(1)
    assert replies(transport) == [b"!Bad password."]


@pytest.mark.parametrize("line", [b"USER a b", b"USER " + b"x" * 65, b"USER \xc3\xa9t\xc3\xa9", b"USER a/b"])
def test_invalid_user_names(session, line):
    protocol, transport = session
    send(protocol, line + b"\r\n")
    assert replies(transport) == [b"!Invalid user name."]


def test_user_usage(session):
    protocol, transport = session
    send(protocol, b"USER\r\n")
    assert replies(transport) == [b"!Usage: USER <name>"]


def test_guest_named_explicitly(session):
    protocol, transport = session
    send(protocol, b"USER guest\r\n")
    replies(transport)
    login(protocol, transport)


def test_file_transfer(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE notes.txt\r\n")
    drainTransfer(transport)
    assert transport.value() == (
        b"#Sending notes.txt (12 bytes).\r\nhello notes\n\r\n#File notes.txt sent successfully.\r\n"
    )


def test_binary_file_and_separators(session, served):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE /docs\\readme.txt\r\n")
    drainTransfer(transport)
    assert transport.value() == (
        b"#Sending /docs\\readme.txt (9 bytes).\r\nread me\r\n\r\n#File /docs\\readme.txt sent successfully.\r\n"
    )


def test_empty_file(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE empty.bin\r\nHELP\r\n")
    drainTransfer(transport)
    assert replies(transport) == [
        b"#Sending empty.bin (0 bytes).",
        b"",
        b"#File empty.bin sent successfully.",
        HELP.encode(),
    ]


def test_name_with_spaces(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE   with space.txt  \r\n")
    drainTransfer(transport)
    assert transport.value().startswith(b"#Sending with space.txt (6 bytes).\r\nspaced\r\n")


def test_commands_wait_for_the_body(session):
    """Pipelined commands are not run while a body is being sent."""
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE binary.bin\r\nHELP\r\nFILE notes.txt\r\n")
    assert HELP.encode() not in transport.value()
    assert protocol.paused
    drainTransfer(transport)
    data = transport.value()
    body = bytes(range(256)) * 4
    assert data.startswith(b"#Sending binary.bin (1024 bytes).\r\n" + body + b"\r\n#File binary.bin sent successfully.\r\n")
    assert data.endswith(HELP.encode() + b"\r\n#Sending notes.txt (12 bytes).\r\nhello notes\n\r\n#File notes.txt sent successfully.\r\n")


def test_file_usage(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE\r\n")
    assert replies(transport) == [b"!Usage: FILE <name>"]


@pytest.mark.parametrize(
    "name",
    [b"missing.txt", b"docs", b"/", b"..", b"../root/notes.txt", b"/etc/passwd", b"..\\..\\etc\\passwd", b"a\x00b"],
)
def test_file_errors_look_alike(session, name):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE " + name + b"\r\n")
    shown = name.replace(b"\x00", b"?")
    assert replies(transport) == [b"!File " + shown + b" could not be opened."]


def test_control_characters_shown_as_question_marks(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE a\x1b[31mred\x7f\r\n")
    assert replies(transport) == [b"!File a?[31mred? could not be opened."]


def test_revision_2_controls_shown_as_question_marks(session):
    """C1 (CSI U+009B), bidi overrides and U+2028 in a repeated name: one clean line."""
    protocol, transport = session
    login(protocol, transport)
    send(protocol, "FILE a\u009b2Jb\u202ec\u2028d\r\n".encode())
    assert replies(transport) == [b"!File a?2Jb?c?d could not be opened."]


def test_list_leaves_out_names_with_unicode_controls(session, served):
    protocol, transport = session
    for name in ("csi\u009bJ.txt", "rlo\u202etxt.exe", "sep\u2028x.txt"):
        (served / name).write_bytes(b"x")
    login(protocol, transport)
    send(protocol, b"LIST\r\n")
    assert replies(transport)[0] == b"#5 entries in /."


def test_list_root(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"LIST\r\n")
    assert replies(transport) == [
        b"#5 entries in /.",
        b"1024 binary.bin",
        b"- docs/",
        b"0 empty.bin",
        b"12 notes.txt",
        b"6 with space.txt",
    ]


def test_list_folder_and_errors(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"LIST docs\r\nLIST nope\r\nLIST notes.txt\r\nLIST ..\r\n")
    assert replies(transport) == [
        b"#1 entries in docs.",
        b"9 readme.txt",
        b"!Directory nope could not be opened.",
        b"!Directory notes.txt could not be opened.",
        b"!Directory .. could not be opened.",
    ]


def test_over_long_line(served, clock):
    protocol, transport = connect(makeFilesFactory(served, clock, maxLine=16))
    replies(transport)
    send(protocol, b"HELP" + b" " * 12 + b"\r\n")  # exactly 16 bytes: fine
    assert replies(transport) == [HELP.encode()]
    send(protocol, b"x" * 17)
    send(protocol, b"x\nHELP\r\n")
    assert replies(transport) == [b"!Line too long."]
    assert transport.disconnecting


def test_tail_of_long_line_never_runs(served, clock):
    protocol, transport = connect(makeFilesFactory(served, clock, maxLine=16))
    replies(transport)
    send(protocol, b"y" * 20 + b"QUIT\r\nHELP\r\n")
    assert replies(transport) == [b"!Line too long."]


def test_telnet_iac_sequences_removed(session):
    protocol, transport = session
    # IAC DO ECHO, a command split by IAC WILL SGA, IAC SB ... IAC SE, IAC IP
    send(protocol, b"\xff\xfd\x01HE\xff\xfb\x03L\xff\xfa\x18\x01\xff\xf0P\xff\xf4\r\n")
    assert replies(transport) == [HELP.encode()]


def test_command_split_byte_by_byte(session):
    protocol, transport = session
    for byte in b"HELP\r\n":
        send(protocol, bytes([byte]))
    assert replies(transport) == [HELP.encode()]


def test_idle_timeout(session, clock):
    protocol, transport = session
    login(protocol, transport)
    clock.advance(299)
    send(protocol, b"HELP\r\n")
    replies(transport)
    clock.advance(299)
    assert not transport.disconnecting
    clock.advance(2)
    assert replies(transport) == [b"!Idle timeout."]
    assert transport.disconnecting


def test_peer_that_does_not_read_is_aborted(session, clock):
    protocol, transport = session
    send(protocol, b"QUIT\r\n")
    assert transport.disconnecting and not transport.disconnected
    clock.advance(10)
    assert transport.disconnected  # StringTransport.abortConnection


def test_stalled_transfer_is_aborted_without_a_word(session, clock):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE binary.bin\r\n")
    transport.clear()
    clock.advance(300)
    assert transport.value() == b""
    assert transport.disconnected


def test_truncated_file_closes_without_trailer(session, served):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE binary.bin\r\n")
    os.truncate(served / "binary.bin", 100)
    drainTransfer(transport)
    data = transport.value()
    assert b"sent successfully" not in data
    assert data == b"#Sending binary.bin (1024 bytes).\r\n" + bytes(range(100))
    assert transport.disconnecting


def test_connection_lost_mid_transfer_closes_the_file(session):
    protocol, transport = session
    login(protocol, transport)
    send(protocol, b"FILE binary.bin\r\n")
    sender = transport.producer
    fd = sender._file.fd
    os.fstat(fd)
    sender.stopProducing()
    protocol.connectionLost(None)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_unexpected_error_is_logged_and_session_goes_on(session, monkeypatch):
    protocol, transport = session
    login(protocol, transport)

    def broken(name):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(protocol.avatar, "list", broken)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        send(protocol, b"LIST\r\nHELP\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert replies(transport) == [b"!Internal error.", HELP.encode()]
    assert any(e.get("log_failure") is not None and "disk on fire" in str(e["log_failure"].value) for e in events)


def test_password_never_logged(served, clock):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        protocol, transport = connect(makeFilesFactory(served, clock))
        send(protocol, b"AUTH wrong guess\r\n")
        clock.advance(1)
        send(protocol, b"AUTH " + PASSWORD.encode() + b"\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("logged in" in e.get("log_format", "") for e in events)
    for event in events:
        text = repr(event)
        assert PASSWORD not in text and "wrong guess" not in text


def test_output_backpressure_holds_commands(session):
    """While the transport's buffer is full (it paused us), commands wait."""
    protocol, transport = session
    protocol.pauseProducing()
    send(protocol, b"HELP\r\n")
    assert replies(transport) == []
    protocol.resumeProducing()
    assert replies(transport) == [HELP.encode()]


def test_caps(served, clock):
    factory = makeFilesFactory(served, clock, maxConnections=3, maxPerAddress=2)
    sessions = [connect(factory, port=p) for p in (1, 2)]
    _, busy = connect(factory, port=3)
    assert replies(busy) == [b"!Server busy, try again later."]
    assert busy.disconnecting
    _, other = connect(factory, host="127.0.0.2")
    assert replies(other) == [b"#Server Ready."]
    _, overTotal = connect(factory, host="127.0.0.3")
    assert replies(overTotal) == [b"!Server busy, try again later."]
    protocol, transport = sessions[0]
    protocol.connectionLost(None)
    _, again = connect(factory, port=4)
    assert replies(again) == [b"#Server Ready."]


def test_login_deadline(session, clock):
    protocol, transport = session
    send(protocol, b"HELP\r\n")
    clock.advance(59.9)
    assert replies(transport) == [HELP.encode()]
    clock.advance(0.2)
    assert replies(transport) == [b"!Login timeout."]
    assert transport.disconnecting


def test_login_deadline_cancelled_by_login(session, clock):
    protocol, transport = session
    login(protocol, transport)
    clock.advance(120)
    assert replies(transport) == []
    assert not transport.disconnecting


def test_login_deadline_during_a_pending_auth(session, clock):
    """The deadline wins over a late failure answer, and a late success is not kept."""
    protocol, transport = session
    clock.advance(59.5)
    send(protocol, b"AUTH wrong\r\n")
    clock.advance(0.6)
    assert replies(transport) == [b"!Login timeout."]
    clock.advance(1)
    assert replies(transport) == []


def test_half_close_answers_everything_then_closes(session):
    protocol, transport = session
    send(protocol, b"AUTH " + PASSWORD.encode() + b"\nFILE binary.bin\nHELP\nHEL")
    protocol.readConnectionLost()
    assert not transport.disconnecting  # the body is still on its way
    drainTransfer(transport)
    lines = replies(transport)
    # ... and the unterminated "HEL" was run too.
    assert lines[-3:] == [b"#File binary.bin sent successfully.", HELP.encode(), b"!Invalid command."]
    assert transport.disconnecting


def test_half_close_when_idle_closes_at_once(session):
    protocol, transport = session
    protocol.readConnectionLost()
    assert transport.disconnecting and replies(transport) == []


@pytest.mark.parametrize("user", [b"USER bad name", b"USER"])
def test_auth_after_a_refused_user_fails(session, clock, user):
    """A pipelined AUTH must not fall back to the default account."""
    protocol, transport = session
    send(protocol, user + b"\r\nAUTH " + PASSWORD.encode() + b"\r\nWHO\r\n")
    clock.advance(1)
    lines = replies(transport)
    assert lines[1:] == [b"!Bad password.", b"!You are not logged in."]
    send(protocol, b"USER guest\r\nAUTH " + PASSWORD.encode() + b"\r\n")
    assert replies(transport)[-1] == b"#You are logged in."


def test_half_close_with_lines_waiting_behind_a_quick_login(session):
    """A login that succeeds at once must not end the session before the lines queued behind it."""
    protocol, transport = session
    protocol.pauseProducing()  # the client is not reading: lines wait in the buffer
    send(protocol, b"AUTH " + PASSWORD.encode() + b"\nLIST docs\nHELP")
    protocol.readConnectionLost()  # and its EOF arrives meanwhile
    assert replies(transport) == []
    protocol.resumeProducing()
    assert replies(transport) == [b"#You are logged in.", b"#1 entries in docs.", b"9 readme.txt", HELP.encode()]
    assert transport.disconnecting


class BrokenChecker:
    """A checker that fails with something other than UnauthorizedLogin (a bug, an unreadable file)."""

    from twisted.cred.credentials import IUsernamePassword

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials):
        raise ValueError("password cannot be longer than 72 bytes")


def test_a_broken_checker_is_a_failed_login(served, clock, logged):
    """Delayed, counted per connection and per address, answered as a wrong password, logged once."""
    from echofile.lockout import LoginPenalties

    penalties = LoginPenalties(clock, maxFailures=3, window=600, duration=600)
    factory = makeFilesFactory(served, clock, checkers=[BrokenChecker()], penalties=penalties)
    protocol, transport = connect(factory)
    replies(transport)
    send(protocol, b"USER mallory\r\nAUTH x\r\n")
    assert replies(transport) == [b"#User mallory accepted, send AUTH."]  # not an instant !Internal error.
    clock.advance(0.99)
    assert replies(transport) == []
    clock.advance(0.02)
    assert replies(transport) == [b"!Bad password."]
    failures = [e for e in logged if e.get("log_failure") is not None]
    assert len(failures) == 1 and failures[0]["log_failure"].check(ValueError)
    for _ in range(2):
        send(protocol, b"AUTH x\r\n")
        clock.advance(1)
    assert replies(transport) == [b"!Bad password.", b"!Too many failed attempts."]
    assert penalties.isLockedOut("127.0.0.1")


def test_no_guest_auth_alone_and_user_guest_are_failed_logins(served, clock):
    from echofile.auth import makePortal
    from echofile.chat import ChatService
    from echofile.files import FilesFactory
    from echofile.limits import ConnectionLimiter

    chat = ChatService()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice="wonder land")
    factory = FilesFactory(
        makePortal(os.fspath(served), None, [checker], chat), clock, ConnectionLimiter(10, 10, "files"), chat,
    )
    protocol, transport = connect(factory)
    replies(transport)
    send(protocol, b"AUTH " + PASSWORD.encode() + b"\r\n")
    clock.advance(0.5)
    assert replies(transport) == []  # delayed like any wrong password
    clock.advance(0.6)
    send(protocol, b"USER guest\r\nAUTH None\r\n")
    clock.advance(1.1)
    assert replies(transport) == [b"!Bad password.", b"#User guest accepted, send AUTH.", b"!Bad password."]
    assert protocol._failures == 2  # counted like wrong passwords
    send(protocol, b"USER alice\r\nAUTH wonder land\r\n")
    assert replies(transport) == [b"#User alice accepted, send AUTH.", b"#You are logged in."]
