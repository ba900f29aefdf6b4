"""
``get`` verifies every file against HASH and ``get --continue`` resumes with
RESUME: the CLI in-process against the real file service on loopback and
against scripted fakes (an older server, a lying one, one that dies mid-body).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import pytest_twisted
from clienthelpers import NO_HASH_NOTICE, names, runClient

from echofile.client.verified import formatRecord, partPaths, readRecord
from echofile.wire import Hashed

BODY = bytes(range(256)) * 4000  # 1,024,000 bytes
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def hashLine(name: bytes, body: bytes, digest: str | None = None, size: int | None = None) -> bytes:
    digest = digest or hashlib.sha256(body).hexdigest()
    return b"#SHA-256 of %s (%d bytes): %s.\r\n" % (name, len(body) if size is None else size, digest.encode())


def fileReply(name: bytes, body: bytes) -> bytes:
    return b"#Sending %s (%d bytes).\r\n%s\r\n#File %s sent successfully.\r\n" % (name, len(body), body, name)


def quit(line: bytes, transport) -> bool:
    if line == b"QUIT":
        transport.write(b"#Bye.\r\n")
        transport.loseConnection()
        return True
    return False


@pytest_twisted.inlineCallbacks
def test_get_from_the_real_server_is_verified_and_says_nothing_more(fileServer, served, out):
    result = yield runClient("--connect", fileServer.endpoint, "get", "notes.txt", "binary.bin", "-o", str(out))
    assert (result.status, result.err) == (0, "")
    assert result.out == "notes.txt has been saved.\nbinary.bin has been saved.\n"
    assert (out / "binary.bin").read_bytes() == (served / "binary.bin").read_bytes()


@pytest_twisted.inlineCallbacks
def test_an_older_server_without_hash_still_downloads_with_one_notice(fakeServer, out):
    seen: list[bytes] = []

    def script(line: bytes, transport) -> None:
        seen.append(line)
        if line.startswith(b"FILE "):
            transport.write(fileReply(line[5:], b"data of " + line[5:]))
        quit(line, transport)

    server = yield fakeServer(script)  # revision 1: HASH is "!Invalid command."
    result = yield runClient("--connect", server.endpoint, "get", "a", "b", "-o", str(out))
    assert (result.status, result.out) == (0, "a has been saved.\nb has been saved.\n")
    assert result.err == NO_HASH_NOTICE + "\n"  # once, not per file
    assert (out / "b").read_bytes() == b"data of b"
    assert seen == [b"FILE a", b"FILE b", b"QUIT"]  # HASH asked once only (it never reached the script)


@pytest_twisted.inlineCallbacks
def test_a_digest_mismatch_is_an_error_and_leaves_nothing(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"HASH good":
            transport.write(hashLine(b"good", b"fine"))
        elif line == b"FILE good":
            transport.write(fileReply(b"good", b"fine"))
        elif line == b"HASH bad":
            transport.write(hashLine(b"bad", BODY))
        elif line == b"FILE bad":
            transport.write(fileReply(b"bad", BODY[:-1] + b"X"))  # one byte differs
        quit(line, transport)

    server = yield fakeServer(script, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "bad", "good", "-o", str(out))
    assert result.status == 1
    assert result.out == "good has been saved.\n"
    assert result.err.startswith(f"bad: not saved: SHA-256 mismatch: the server announced {DIGEST}")
    assert names(out) == ["good"]


@pytest_twisted.inlineCallbacks
def test_a_hash_size_other_than_the_file_size_is_an_error_and_leaves_nothing(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"HASH x":
            transport.write(hashLine(b"x", BODY, size=len(BODY) + 1))
        elif line == b"FILE x":
            transport.write(fileReply(b"x", BODY))
        quit(line, transport)

    server = yield fakeServer(script, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "x", "-o", str(out))
    assert result.status == 1
    assert result.err == f"x: not saved: the file changed on the server: HASH said {len(BODY) + 1} bytes, FILE sends {len(BODY)}\n"
    assert names(out) == []


@pytest_twisted.inlineCallbacks
def test_a_digest_that_is_not_hex_is_a_protocol_violation(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"HASH x":
            transport.write(b"#SHA-256 of x (4 bytes): \x1b[2Jnot-hex.\r\n")

    server = yield fakeServer(script, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "x", "-o", str(out))
    assert result.status == 2
    assert "not 64 lowercase hex digits" in result.err and "\x1b" not in result.err
    assert names(out) == []


@pytest_twisted.inlineCallbacks
def test_no_verify_asks_no_hash(fakeServer, out):
    seen: list[bytes] = []

    def script(line: bytes, transport) -> None:
        seen.append(line)
        if line == b"FILE x":
            transport.write(fileReply(b"x", b"unchecked"))
        quit(line, transport)

    server = yield fakeServer(script, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "x", "--no-verify", "-o", str(out))
    assert (result.status, result.err) == (0, "")
    assert seen == [b"FILE x", b"QUIT"]


@pytest.mark.parametrize("argv, message", [
    (["--continue", "--no-verify"], "--continue needs the SHA-256 check"),
    (["-c", "-o", "-"], "--continue cannot resume on standard output"),
])
@pytest_twisted.inlineCallbacks
def test_continue_usage_errors(argv, message):
    result = yield runClient("get", "x", *argv)
    assert result.status == 2 and message in result.err


@pytest_twisted.inlineCallbacks
def test_continue_after_a_lost_connection_sends_only_the_rest(fakeServer, out):
    """The first run dies mid-body and keeps its part; the second asks RESUME for the rest only."""
    seen: list[bytes] = []

    def dying(line: bytes, transport) -> None:
        seen.append(line)
        if line == b"HASH big":
            transport.write(hashLine(b"big", BODY))
        elif line == b"FILE big":
            transport.write(b"#Sending big (%d bytes).\r\n" % len(BODY) + BODY[:300_000])
            transport.loseConnection()

    server = yield fakeServer(dying, knowsHash=True)
    first = yield runClient("--connect", server.endpoint, "get", "--continue", "big", "-o", str(out))
    assert first.status == 2
    part, record = partPaths(out / "big")
    assert "the part is kept in" in first.err and "get --continue resumes it" in first.err
    assert names(out) == [part.name, record.name]
    assert part.read_bytes() == BODY[:300_000] and readRecord(record) == (DIGEST, len(BODY))

    def resuming(line: bytes, transport) -> None:
        seen.append(line)
        if line == b"HASH big":
            transport.write(hashLine(b"big", BODY))
        elif line == b"RESUME 300000 big":
            rest = BODY[300_000:]
            transport.write(b"#Sending big from byte 300000 (%d bytes).\r\n%s\r\n#File big sent successfully.\r\n"
                            % (len(rest), rest))
        quit(line, transport)

    server = yield fakeServer(resuming, knowsHash=True)
    second = yield runClient("--connect", server.endpoint, "get", "--continue", "big", "-o", str(out))
    assert (second.status, second.out, second.err) == (0, "big has been saved.\n", "")
    assert seen == [b"HASH big", b"FILE big", b"HASH big", b"RESUME 300000 big", b"QUIT"]
    assert (out / "big").read_bytes() == BODY
    assert names(out) == ["big"]


@pytest_twisted.inlineCallbacks
def test_without_continue_an_interrupted_download_leaves_nothing(fakeServer, out):
    def dying(line: bytes, transport) -> None:
        if line == b"HASH big":
            transport.write(hashLine(b"big", BODY))
        elif line == b"FILE big":
            transport.write(b"#Sending big (%d bytes).\r\n" % len(BODY) + BODY[:300_000])
            transport.loseConnection()

    server = yield fakeServer(dying, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "big", "-o", str(out))
    assert result.status == 2 and "kept" not in result.err
    assert names(out) == []


@pytest_twisted.inlineCallbacks
def test_continue_after_the_server_file_changed_starts_over_once(fileServer, served, out):
    """The part and its record are of an older file: the record's digest is not the server's now."""
    old = b"old content " * 50_000
    new = b"new content!" * 60_000
    (served / "changing.bin").write_bytes(new)
    part, record = partPaths(out / "changing.bin")
    part.write_bytes(old[:200_000])
    record.write_bytes(formatRecord(Hashed("changing.bin", len(old), hashlib.sha256(old).hexdigest())))
    result = yield runClient("--connect", fileServer.endpoint, "get", "-c", "changing.bin", "-o", str(out))
    assert (result.status, result.out) == (0, "changing.bin has been saved.\n")
    assert result.err == "changing.bin: not resuming (the file changed on the server since the part was saved); starting over\n"
    assert (out / "changing.bin").read_bytes() == new
    assert names(out) == ["changing.bin"]


@pytest_twisted.inlineCallbacks
def test_continue_whose_whole_file_check_fails_starts_over_once_and_ends_verified(fileServer, served, out):
    """The record matches the server's file, but the part's bytes do not (changed in between): RESUME, check, again."""
    new = b"0123456789" * 100_000
    (served / "big.bin").write_bytes(new)
    part, record = partPaths(out / "big.bin")
    part.write_bytes(b"x" * 400_000)
    record.write_bytes(formatRecord(Hashed("big.bin", len(new), hashlib.sha256(new).hexdigest())))
    result = yield runClient("--connect", fileServer.endpoint, "get", "--continue", "big.bin", "-o", str(out))
    assert (result.status, result.out) == (0, "big.bin has been saved.\n")
    assert result.err.startswith("big.bin: SHA-256 mismatch") and result.err.endswith("; starting over\n")
    assert result.err.count("\n") == 1
    assert (out / "big.bin").read_bytes() == new
    assert names(out) == ["big.bin"]


@pytest_twisted.inlineCallbacks
def test_continue_that_never_matches_gives_up_after_one_restart_and_leaves_nothing(fakeServer, out):
    asked: list[bytes] = []

    def lying(line: bytes, transport) -> None:
        asked.append(line)
        if line == b"HASH x":
            transport.write(hashLine(b"x", BODY))
        elif line == b"FILE x":
            transport.write(fileReply(b"x", BODY[::-1]))
        quit(line, transport)

    server = yield fakeServer(lying, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "--continue", "x", "-o", str(out))
    assert result.status == 1
    lines = result.err.splitlines()
    assert len(lines) == 2 and lines[0].endswith("; starting over") and lines[1].startswith("x: not saved: SHA-256 mismatch")
    assert asked == [b"HASH x", b"FILE x", b"HASH x", b"FILE x", b"QUIT"]
    assert names(out) == []


@pytest_twisted.inlineCallbacks
def test_a_record_that_cannot_be_written_is_a_clean_error(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"HASH x":
            transport.write(hashLine(b"x", BODY))
        quit(line, transport)

    part, record = partPaths(out / "x")
    record.mkdir()  # whatever is there is not a record, and cannot be replaced by one
    server = yield fakeServer(script, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "--continue", "x", "-o", str(out))
    assert result.status == 1
    assert result.err.startswith("x: not saved: Is a directory") and "Traceback" not in result.err
    assert not (out / "x").exists()


@pytest_twisted.inlineCallbacks
def test_a_complete_part_is_resumed_at_its_end_and_checked(fakeServer, out):
    seen: list[bytes] = []

    def script(line: bytes, transport) -> None:
        seen.append(line)
        if line == b"HASH x":
            transport.write(hashLine(b"x", BODY))
        elif line == b"RESUME %d x" % len(BODY):
            transport.write(b"#Sending x from byte %d (0 bytes).\r\n\r\n#File x sent successfully.\r\n" % len(BODY))
        quit(line, transport)

    part, record = partPaths(out / "x")
    part.write_bytes(BODY)
    record.write_bytes(formatRecord(Hashed("x", len(BODY), DIGEST)))
    server = yield fakeServer(script, knowsHash=True)
    result = yield runClient("--connect", server.endpoint, "get", "-c", "x", "-o", str(out))
    assert (result.status, result.out, result.err) == (0, "x has been saved.\n", "")
    assert seen == [b"HASH x", b"RESUME %d x" % len(BODY), b"QUIT"]
    assert (out / "x").read_bytes() == BODY and names(out) == ["x"]
