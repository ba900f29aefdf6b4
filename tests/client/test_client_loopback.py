"""
The command line, run in-process against the real file server (and a few
scripted fake servers) over loopback TCP.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import pytest_twisted
from clienthelpers import ALICE_PASSWORD, NO_HASH_NOTICE, Listening, names, runClient
from support import PASSWORD, makeFilesFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol

from echofile.client.getting import baseName
from echofile.client.sinks import SaveError, TempFileSink
from echofile.client.progress import RichDisplay, Transfer, makeDisplay
from echofile.client import Entry, FileClient

NOTICE = NO_HASH_NOTICE + "\n"  # these fakes are revision-1 servers: HASH is an invalid command there


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest_twisted.inlineCallbacks
def test_get_several_files_and_a_missing_one(fileServer, served, out):
    result = yield runClient(
        "--connect", fileServer.endpoint, "get", "notes.txt", "missing.txt", "docs/readme.txt", "binary.bin", "-o", str(out)
    )
    assert result.status == 1
    assert result.out.splitlines() == [
        "notes.txt has been saved.",
        "docs/readme.txt has been saved.",
        "binary.bin has been saved.",
    ]
    assert result.err.splitlines() == ["File missing.txt not found on server"]
    assert names(out) == ["binary.bin", "notes.txt", "readme.txt"]
    for saved, original in [("notes.txt", "notes.txt"), ("readme.txt", "docs/readme.txt"), ("binary.bin", "binary.bin")]:
        assert (out / saved).read_bytes() == (served / original).read_bytes()


@pytest_twisted.inlineCallbacks
def test_all_saved_is_status_0_and_options_may_follow_names(fileServer, served, out):
    result = yield runClient("get", "notes.txt", "-o", str(out), "with space.txt", "empty.bin", "--connect", fileServer.endpoint)
    assert (result.status, result.err) == (0, "")
    assert names(out) == ["empty.bin", "notes.txt", "with space.txt"]
    assert (out / "empty.bin").read_bytes() == b""
    assert (out / "with space.txt").read_bytes() == b"spaced"


@pytest_twisted.inlineCallbacks
def test_trailer_like_lines_in_a_body_come_through(fileServer, served, out):
    body = (
        b"#File tricky.txt sent successfully.\r\n"
        b"\r\n#File tricky.txt sent successfully.\r\n"
        b"#Sending tricky.txt (5 bytes).\r\n!Bad password.\r\n*guest: hi\r\n"
    ) * 1000
    (served / "tricky.txt").write_bytes(body)
    result = yield runClient("--connect", fileServer.endpoint, "get", "tricky.txt", "notes.txt", "-o", str(out))
    assert result.status == 0, result.err
    assert (out / "tricky.txt").read_bytes() == body
    assert (out / "notes.txt").read_bytes() == (served / "notes.txt").read_bytes()


@pytest_twisted.inlineCallbacks
def test_existing_file_kept_unless_force(fileServer, served, out):
    (out / "notes.txt").write_bytes(b"mine")
    result = yield runClient("--connect", fileServer.endpoint, "get", "notes.txt", "-o", str(out))
    assert result.status == 1
    assert result.err == f"{out / 'notes.txt'} already exists (use --force to overwrite)\n"
    assert (out / "notes.txt").read_bytes() == b"mine"
    result = yield runClient("--connect", fileServer.endpoint, "get", "--force", "notes.txt", "-o", str(out))
    assert (result.status, result.out) == (0, "notes.txt has been saved.\n")
    assert (out / "notes.txt").read_bytes() == (served / "notes.txt").read_bytes()
    assert names(out) == ["notes.txt"]


@pytest_twisted.inlineCallbacks
def test_output_folder_is_made(fileServer, tmp_path):
    target = tmp_path / "new" / "folder"
    result = yield runClient("--connect", fileServer.endpoint, "get", "notes.txt", "-o", str(target))
    assert result.status == 0
    assert names(target) == ["notes.txt"]


@pytest_twisted.inlineCallbacks
def test_wrong_password(fileServer, out):
    result = yield runClient(
        "--connect", fileServer.endpoint, "get", "notes.txt", "-o", str(out), environ={"ECHOFILE_PASSWORD": "wrong"}
    )
    assert (result.status, result.out) == (2, "")
    assert result.err == "echofile-client: login failed: Bad password.\n"
    assert names(out) == []


@pytest_twisted.inlineCallbacks
def test_named_account_with_password_file(fileServer, tmp_path, out):
    secret = tmp_path / "secret"
    secret.write_text(ALICE_PASSWORD + "\n")
    result = yield runClient(
        "--connect", fileServer.endpoint, "--user", "alice", "--password-file", str(secret),
        "get", "notes.txt", "-o", str(out), environ={},
    )
    assert (result.status, result.err) == (0, "")
    result = yield runClient(
        "--connect", fileServer.endpoint, "--user", "alice", "list", environ={"ECHOFILE_PASSWORD": PASSWORD}
    )
    assert (result.status, result.err) == (2, "echofile-client: login failed: Bad password.\n")


@pytest_twisted.inlineCallbacks
def test_no_password_anywhere(fileServer):
    result = yield runClient("--connect", fileServer.endpoint, "list", environ={})
    assert result.status == 2
    assert result.err == "echofile-client: no password: use --password-file PATH or set ECHOFILE_PASSWORD\n"


@pytest_twisted.inlineCallbacks
def test_list(fileServer):
    result = yield runClient("--connect", fileServer.endpoint, "list")
    assert (result.status, result.err) == (0, "")
    assert result.out.splitlines() == ["1024 binary.bin", "- docs/", "0 empty.bin", "12 notes.txt", "6 with space.txt"]
    result = yield runClient("--connect", fileServer.endpoint, "list", "docs")
    assert result.out.splitlines() == ["9 readme.txt"]
    result = yield runClient("--connect", fileServer.endpoint, "list", "nowhere")
    assert (result.status, result.out, result.err) == (1, "", "Directory nowhere could not be opened.\n")


@pytest_twisted.inlineCallbacks
def test_unreachable_server(out):
    port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Factory.forProtocol(Protocol))
    number = port.getHost().port
    yield port.stopListening()  # nothing listens there now
    result = yield runClient("--connect", f"tcp:host=127.0.0.1:port={number}", "get", "x", "-o", str(out))
    assert result.status == 2
    assert result.err == f"echofile-client: cannot connect to tcp:host=127.0.0.1:port={number}: Connection refused\n"


@pytest_twisted.inlineCallbacks
def test_busy_server(served, out):
    server = yield Listening(makeFilesFactory(served, reactor, maxConnections=1)).start()
    endpoint = server.endpoint
    try:
        holder = yield connectProtocol(clientFromString(reactor, server.endpoint), Protocol())
        result = yield runClient("--connect", server.endpoint, "get", "notes.txt", "-o", str(out))
        holder.transport.loseConnection()
    finally:
        yield server.stop()
    assert result.status == 2
    assert result.err == f"echofile-client: {endpoint} refused the session: Server busy, try again later.\n"


@pytest_twisted.inlineCallbacks
def test_server_dies_mid_body(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"FILE good.txt":
            transport.write(b"#Sending good.txt (2 bytes).\r\nok\r\n#File good.txt sent successfully.\r\n")
        elif line == b"FILE big.bin":
            transport.write(b"#Sending big.bin (1000 bytes).\r\n" + b"0123456789")
            transport.loseConnection()

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "good.txt", "big.bin", "after.txt", "-o", str(out))
    assert result.status == 2
    assert result.out == "good.txt has been saved.\n"
    assert result.err == NOTICE + "big.bin: not saved: connection lost after 10 of 1000 bytes\n"
    assert names(out) == ["good.txt"]  # no big.bin, no temporary file


@pytest_twisted.inlineCallbacks
def test_silent_server_times_out(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line.startswith(b"FILE"):
            transport.write(b"#Sending stuck.bin (100 bytes).\r\n0123")  # then nothing

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "--timeout", "0.2", "get", "stuck.bin", "-o", str(out))
    assert result.status == 2
    assert result.err == NOTICE + "stuck.bin: not saved: no reply from the server for 0.2 s\n"
    assert names(out) == []


@pytest_twisted.inlineCallbacks
def test_event_lines_go_to_stderr(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"FILE x":
            transport.write(b"*bob: before\r\n#Sending x (3 bytes).\r\n*x*\r\n#File x sent successfully.\r\n*bob: after\r\n")
        elif line == b"QUIT":
            transport.write(b"*bob: bye\r\n#Bye.\r\n")
            transport.loseConnection()

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "x", "-o", str(out))
    assert (result.status, result.out) == (0, "x has been saved.\n")
    assert result.err.splitlines() == [NO_HASH_NOTICE, "*bob: before", "*bob: after", "*bob: bye"]
    assert (out / "x").read_bytes() == b"*x*"


@pytest_twisted.inlineCallbacks
def test_library_sees_real_chat_events_between_replies(fileServer):
    """The library against the real server: another session's SAY arrives as an event, replies stay paired."""
    events: list[str] = []
    heard: Deferred[None] = Deferred()

    def onEvent(text: str) -> None:
        events.append(text)
        if not heard.called:
            heard.callback(None)

    listener = FileClient(reactor, 10, onEvent=onEvent)
    speaker = FileClient(reactor, 10)
    endpoint = clientFromString(reactor, fileServer.endpoint)
    yield connectProtocol(endpoint, listener)
    yield connectProtocol(endpoint, speaker)
    yield listener.login(PASSWORD)
    yield speaker.login(ALICE_PASSWORD, user="alice")
    said = speaker.say("hello")
    yield heard
    listing = yield listener.list("docs")
    assert (yield said) == "Said."
    assert listing == [Entry("readme.txt", 9)]
    assert events == ["alice: hello"]
    assert (yield speaker.who()) == ["alice", "~guest1"]
    assert (yield speaker.msg("~guest1", "psst")) == "Sent to ~guest1."
    assert (yield listener.who()) == ["alice", "~guest1"]
    assert events == ["alice: hello", "alice (private): psst"]
    for client in (listener, speaker):
        yield client.quit()
        yield client.whenDisconnected()


@pytest_twisted.inlineCallbacks
def test_usage_errors():
    for argv, message in [
        ([], "the following arguments are required: command"),
        (["fetch", "x"], "invalid choice: 'fetch'"),
        (["get"], "the following arguments are required: NAME"),
        (["--timeout", "-1", "list"], "must be a positive number of seconds"),
        (["--connect", "nonsense:x", "list"], "invalid --connect endpoint 'nonsense:x'"),
        (["get", "x", "--bogus"], "unrecognized arguments: --bogus"),
    ]:
        result = yield runClient(*argv)
        assert result.status == 2, argv
        assert result.out == ""
        assert result.err.count("\n") == 1 and result.err.startswith("echofile-client: "), result.err
        assert message in result.err, result.err


def test_base_names():
    assert baseName("a/b/c.txt") == "c.txt"
    assert baseName("a\\b.txt") == "b.txt"
    assert baseName("/top.txt") == "top.txt"
    for bad in ("/", "..", "a/..", "."):
        with pytest.raises(SaveError):
            baseName(bad)


def test_temp_file_is_discarded(tmp_path):
    sink = TempFileSink(tmp_path / "f.bin", Transfer())
    sink.begin(10)
    sink.write(b"12345")
    assert len(names(tmp_path)) == 1 and names(tmp_path)[0].endswith(".part")
    sink.discard()
    assert names(tmp_path) == []


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_not_quiet():
    assert isinstance(makeDisplay(FakeTerminal(), reactor, quiet=False), RichDisplay)
    assert not isinstance(makeDisplay(FakeTerminal(), reactor, quiet=True), RichDisplay)
    assert not isinstance(makeDisplay(io.StringIO(), reactor, quiet=False), RichDisplay)
