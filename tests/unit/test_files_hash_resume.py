"""HASH and RESUME (PROTOCOL.md rev 2, "Resuming and verifying") against StringTransport, threads faked."""

from __future__ import annotations

import gc
import hashlib
import os

import pytest
from twisted.internet.task import Clock

from echofile.files import HELP
from echofile.hashing import FileHasher
from support import PASSWORD, FakeThreads, connect, drainTransfer, makeFilesFactory, replies


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def threads() -> FakeThreads:
    return FakeThreads()


@pytest.fixture
def hashes(threads) -> FileHasher:
    return FileHasher(threads, maxJobs=2)


def newSession(served, clock, hashes, logIn: bool = True):
    protocol, transport = connect(makeFilesFactory(served, clock, hashes=hashes))
    assert replies(transport) == [b"#Server Ready."]
    if logIn:
        protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
        assert replies(transport) == [b"#You are logged in."]
    return protocol, transport


@pytest.fixture
def session(served, clock, hashes):
    return newSession(served, clock, hashes)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def openFds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def steadyFds():
    """
    Counting the process's descriptors is exact only if nothing else closes
    one meanwhile: the garbage collector finalising what earlier tests left
    (a socket, a file) would. Collect first, then keep it off for the test.
    """
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_help_lists_the_revision_2_commands(session):
    protocol, transport = session
    protocol.dataReceived(b"HELP\r\n")
    assert replies(transport) == [b"#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO."]
    assert HELP == "#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO."


# -- HASH ----------------------------------------------------------------------------------


def test_hash_answers_after_the_thread_and_holds_input(session, threads, served):
    protocol, transport = session
    protocol.dataReceived(b"HASH binary.bin\r\nHELP\r\n")
    assert replies(transport) == []  # neither the digest nor the pipelined HELP yet
    assert len(threads.pending) == 1
    threads.runNext()
    data = (served / "binary.bin").read_bytes()
    assert replies(transport) == [b"#SHA-256 of binary.bin (1024 bytes): " + sha(data) + b".", HELP.encode()]


def test_hash_of_an_empty_file_and_a_name_with_spaces(session, threads):
    protocol, transport = session
    protocol.dataReceived(b"HASH empty.bin\r\n")
    threads.runNext()
    protocol.dataReceived(b"HASH with space.txt\r\n")
    threads.runNext()
    assert replies(transport) == [
        b"#SHA-256 of empty.bin (0 bytes): " + sha(b"") + b".",
        b"#SHA-256 of with space.txt (6 bytes): " + sha(b"spaced") + b".",
    ]


def test_second_hash_of_an_unchanged_file_is_cached(session, threads, hashes):
    protocol, transport = session
    protocol.dataReceived(b"HASH notes.txt\r\n")
    threads.runNext()
    first = replies(transport)
    protocol.dataReceived(b"HASH notes.txt\r\n")
    assert replies(transport) == first  # at once: no thread
    assert threads.calls == 1 and hashes.hits == 1


def test_hash_of_a_changed_file_is_computed_again(session, threads, served):
    protocol, transport = session
    protocol.dataReceived(b"HASH notes.txt\r\n")
    threads.runNext()
    replies(transport)
    (served / "notes.txt").write_bytes(b"other notes\n")
    protocol.dataReceived(b"HASH notes.txt\r\n")
    assert threads.calls == 2
    threads.runNext()
    assert replies(transport) == [b"#SHA-256 of notes.txt (12 bytes): " + sha(b"other notes\n") + b"."]


@pytest.mark.parametrize("name", ["missing", "docs", "../secret", "/", "a\x00b", "docs/readme.txt/"])
def test_hash_of_what_file_would_refuse(session, threads, name):
    protocol, transport = session
    protocol.dataReceived(b"HASH " + name.encode() + b"\r\n")
    shown = name.replace("\x00", "?").encode()
    assert replies(transport) == [b"!File " + shown + b" could not be opened."]
    assert threads.calls == 0


def test_hash_repeats_the_name_sanitized(session, served):
    protocol, transport = session
    protocol.dataReceived("HASH x\u202e\x1b.txt\r\n".encode())
    assert replies(transport) == [b"!File x??.txt could not be opened."]


def test_hash_usage_and_login(served, clock, hashes):
    protocol, transport = newSession(served, clock, hashes, logIn=False)
    protocol.dataReceived(b"HASH notes.txt\r\nhash\r\n")
    assert replies(transport) == [b"!You are not logged in.", b"!You are not logged in."]
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\nHASH\r\nHASH \t \r\n")
    assert replies(transport) == [b"#You are logged in.", b"!Usage: HASH <name>", b"!Usage: HASH <name>"]


def test_hash_read_error_is_the_open_error(session, threads, monkeypatch, logged):
    protocol, transport = session

    def failing(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "preadv", failing)
    protocol.dataReceived(b"HASH notes.txt\r\nHELP\r\n")
    threads.runNext()
    assert replies(transport) == [b"!File notes.txt could not be opened.", HELP.encode()]
    assert not [e for e in logged if "log_failure" in e]


def test_cap_queues_in_order(served, clock, threads, hashes):
    sessions = [newSession(served, clock, hashes) for _ in range(3)]
    for (protocol, _), name in zip(sessions, [b"notes.txt", b"binary.bin", b"with space.txt"]):
        protocol.dataReceived(b"HASH " + name + b"\r\n")
    assert hashes.active == 2 and hashes.queued == 1 and len(threads.pending) == 2
    threads.runNext()  # the first finishes: the third starts
    assert replies(sessions[0][1])[0].startswith(b"#SHA-256 of notes.txt (12 bytes): ")
    assert hashes.active == 2 and hashes.queued == 0 and len(threads.pending) == 2
    threads.runNext()
    threads.runNext()
    assert replies(sessions[1][1])[0].startswith(b"#SHA-256 of binary.bin (1024 bytes): ")
    assert replies(sessions[2][1]) == [b"#SHA-256 of with space.txt (6 bytes): " + sha(b"spaced") + b"."]
    assert hashes.peak == 2 and hashes.active == 0


def test_gone_session_waiting_gives_back_its_place_and_descriptor(served, clock, threads, hashes, logged, steadyFds):
    first, _ = newSession(served, clock, hashes)
    second, _ = newSession(served, clock, hashes)
    third, thirdTransport = newSession(served, clock, hashes)
    first.dataReceived(b"HASH notes.txt\r\n")
    second.dataReceived(b"HASH binary.bin\r\n")
    before = openFds()
    third.dataReceived(b"HASH with space.txt\r\n")
    assert hashes.queued == 1 and openFds() == before + 1
    third.connectionLost(None)
    assert hashes.queued == 0 and openFds() == before
    threads.runNext()
    threads.runNext()
    assert hashes.active == 0 and hashes.started == 2 and threads.pending == []
    assert thirdTransport.value() == b""
    assert not [e for e in logged if "log_failure" in e]


def test_gone_session_running_stops_and_frees_the_slot(served, clock, threads, hashes, logged, steadyFds):
    first, firstTransport = newSession(served, clock, hashes)
    second, _ = newSession(served, clock, hashes)
    third, thirdTransport = newSession(served, clock, hashes)
    first.dataReceived(b"HASH binary.bin\r\n")
    second.dataReceived(b"HASH notes.txt\r\n")
    third.dataReceived(b"HASH with space.txt\r\n")
    before = openFds()
    first.connectionLost(None)
    assert hashes.active == 2 and openFds() == before  # the thread still has the descriptor
    threads.runNext()  # the first job's thread sees its stop flag and returns
    assert openFds() == before - 1
    assert firstTransport.value() == b""
    assert hashes.active == 2 and hashes.bytesHashed == 0  # the third one got the slot
    assert len(hashes.cache) == 0
    threads.runNext()
    threads.runNext()
    assert replies(thirdTransport) == [b"#SHA-256 of with space.txt (6 bytes): " + sha(b"spaced") + b"."]
    assert not [e for e in logged if "log_failure" in e]


def test_idle_timeout_while_waiting_cancels_the_job(session, clock, threads, hashes, logged):
    protocol, transport = session
    protocol.dataReceived(b"HASH notes.txt\r\n")
    clock.advance(300)
    assert replies(transport) == [b"!Idle timeout."]
    threads.runNext()
    assert transport.value() == b"" and hashes.active == 0
    assert not [e for e in logged if "log_failure" in e]


def test_shutdown_while_hashing(session, threads, logged):
    protocol, transport = session
    protocol.dataReceived(b"HASH notes.txt\r\nHELP\r\n")
    protocol.shutdown()
    threads.runNext()
    assert replies(transport) == [b"!Server shutting down."]
    assert not [e for e in logged if "log_failure" in e]


def test_hasher_stop_service_cancels_everything(served, clock, threads, hashes, logged):
    protocols = [newSession(served, clock, hashes) for _ in range(3)]
    for protocol, _ in protocols:
        protocol.dataReceived(b"HASH notes.txt\r\n")
    hashes.startService()
    hashes.stopService()
    assert hashes.queued == 0
    while threads.pending:
        threads.runNext()
    assert hashes.active == 0 and hashes.bytesHashed == 0
    for protocol, transport in protocols:
        protocol.shutdown()
        assert replies(transport) == [b"!Server shutting down."]
    assert not [e for e in logged if "log_failure" in e]


# -- RESUME --------------------------------------------------------------------------------


def resume(protocol, transport, line: bytes) -> bytes:
    protocol.dataReceived(line + b"\r\n")
    drainTransfer(transport)
    data = transport.value()
    transport.clear()
    return data


@pytest.mark.parametrize("offset", [0, 1, 1000, 1023, 1024])
def test_resume_sends_the_rest(session, served, offset):
    protocol, transport = session
    data = (served / "binary.bin").read_bytes()
    rest = data[offset:]
    assert resume(protocol, transport, b"RESUME %d binary.bin" % offset) == (
        b"#Sending binary.bin from byte %d (%d bytes).\r\n" % (offset, len(rest))
        + rest + b"\r\n#File binary.bin sent successfully.\r\n"
    )


def test_resume_name_with_spaces_and_leading_zeros(session):
    protocol, transport = session
    assert resume(protocol, transport, b"resume \t 0003  with space.txt") == (
        b"#Sending with space.txt from byte 3 (3 bytes).\r\nced\r\n#File with space.txt sent successfully.\r\n"
    )


def test_resume_of_an_empty_file(session):
    protocol, transport = session
    assert resume(protocol, transport, b"RESUME 0 empty.bin") == (
        b"#Sending empty.bin from byte 0 (0 bytes).\r\n\r\n#File empty.bin sent successfully.\r\n"
    )


@pytest.mark.parametrize("argument", [
    "", "5", "-1 notes.txt", "+5 notes.txt", "1e3 notes.txt", "0x10 notes.txt", "1_0 notes.txt", "5. notes.txt",
    "1" * 21 + " notes.txt", "\u0663 notes.txt", "\uff15 notes.txt", "notes.txt", "notes.txt 5", "- notes.txt",
])
def test_resume_usage(session, argument):
    protocol, transport = session
    protocol.dataReceived(f"RESUME {argument}\r\nHELP\r\n".encode())
    assert replies(transport) == [b"!Usage: RESUME <offset> <name>", HELP.encode()]


def test_resume_offset_of_twenty_digits_is_past_the_end(session):
    protocol, transport = session
    protocol.dataReceived(b"RESUME " + b"9" * 20 + b" notes.txt\r\n")
    assert replies(transport) == [b"!Offset " + b"9" * 20 + b" is past the end of notes.txt (12 bytes)."]


def test_resume_past_the_end_and_the_session_goes_on(session, steadyFds):
    protocol, transport = session
    before = openFds()
    protocol.dataReceived(b"RESUME 13 notes.txt\r\nRESUME 012 notes.txt\r\n")
    drainTransfer(transport)
    assert replies(transport) == [
        b"!Offset 13 is past the end of notes.txt (12 bytes).",
        b"#Sending notes.txt from byte 12 (0 bytes).",
        b"",
        b"#File notes.txt sent successfully.",
    ]
    assert openFds() == before


@pytest.mark.parametrize("name", ["missing", "docs", "../secret", "/"])
def test_resume_of_what_file_would_refuse(session, name):
    protocol, transport = session
    protocol.dataReceived(b"RESUME 0 " + name.encode() + b"\r\n")
    assert replies(transport) == [b"!File " + name.encode() + b" could not be opened."]


def test_resume_needs_login(served, clock, hashes):
    protocol, transport = newSession(served, clock, hashes, logIn=False)
    protocol.dataReceived(b"RESUME 0 notes.txt\r\nRESUME\r\n")
    assert replies(transport) == [b"!You are not logged in.", b"!You are not logged in."]


def test_resume_of_a_file_that_shrinks_closes_without_trailer(session, served):
    protocol, transport = session
    path = served / "big.bin"
    path.write_bytes(b"x" * (1024 * 1024))
    protocol.dataReceived(b"RESUME 1000 big.bin\r\n")
    os.truncate(path, 2000)
    drainTransfer(transport)
    data = transport.value()
    assert data.startswith(b"#Sending big.bin from byte 1000 (1047576 bytes).\r\n" + b"x" * 1000)
    assert b"sent successfully" not in data
    assert transport.disconnecting


def test_hash_wait_keeps_reading_a_bounded_amount(session, threads):
    """While the digest is awaited the transport still reads (a peer that leaves is noticed), up to HELD_INPUT."""
    from echofile.files import HELD_INPUT

    protocol, transport = session
    protocol.dataReceived(b"HASH notes.txt\r\n")
    assert transport.producerState == "producing"
    count = HELD_INPUT // len(b"HELP\r\n") + 10
    protocol.dataReceived(b"HELP\r\n" * count)
    assert transport.producerState == "paused" and replies(transport) == []
    threads.runNext()
    answers = replies(transport)
    assert answers[0].startswith(b"#SHA-256 of notes.txt") and answers[1:] == [HELP.encode()] * count
    assert transport.producerState == "producing"


def test_hash_answered_from_the_cache_does_not_pause(session, threads):
    protocol, transport = session
    protocol.dataReceived(b"HASH notes.txt\r\n")
    threads.runNext()
    replies(transport)
    protocol.dataReceived(b"HASH notes.txt\r\nHELP\r\n")
    assert replies(transport)[1:] == [HELP.encode()]
    assert transport.producerState == "producing"
