"""
Issue 12, the client side: HASH and RESUME replies (wire parsers, readers on a
StringTransport and a task.Clock), the verifying sink and ``--continue``'s part
file and record as untrusted input.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from clienthelpers import TIMEOUT, Results, feed, sent

from echofile import wire
from echofile.client import MemorySink, ProtocolViolation, ReplyTimeout, ServerError
from echofile.client.progress import Transfer
from echofile.client.verified import Mismatch, PartSink, VerifyingSink, formatRecord, partPaths, readRecord

DIGEST = hashlib.sha256(b"hello").hexdigest()


# -- the parsers ----------------------------------------------------------------------


def test_parse_hashed():
    assert wire.parseHashed(f"#SHA-256 of big (5 bytes): {DIGEST}.") == ("big", 5, DIGEST)
    assert wire.parseHashed(f"#SHA-256 of a (1 bytes): b.c (5 bytes): {DIGEST}.") == ("a (1 bytes): b.c", 5, DIGEST)
    assert wire.parseHashed("#Sending big (5 bytes).") is None
    assert wire.parseHashed(f"#SHA-256 of big (5 bytes) {DIGEST}.") is None


@pytest.mark.parametrize("digest", [DIGEST.upper(), DIGEST[:63], DIGEST + "0", "g" * 64, "", "\x1b[2J" + DIGEST[4:]])
def test_a_digest_that_is_not_64_lowercase_hex_is_malformed(digest):
    with pytest.raises(wire.MalformedReply):
        wire.parseHashed(f"#SHA-256 of big (5 bytes): {digest}.")


def test_hash_and_resume_numbers_are_bounded():
    assert wire.parseHashed(f"#SHA-256 of x ({'9' * 20} bytes): {DIGEST}.").size == 10**20 - 1
    with pytest.raises(wire.MalformedReply):
        wire.parseHashed(f"#SHA-256 of x ({'9' * 21} bytes): {DIGEST}.")
    assert wire.parseResuming("#Sending a b from byte 10 (5 bytes).") == ("a b", 10, 5)
    assert wire.parseResuming("#Sending a b (5 bytes).") is None
    for line in (f"#Sending x from byte {'1' * 21} (5 bytes).", f"#Sending x from byte 1 ({'1' * 5000} bytes)."):
        with pytest.raises(wire.MalformedReply):
            wire.parseResuming(line)


# -- the readers on a StringTransport --------------------------------------------------


def test_hash_request(ready):
    protocol, transport = ready
    result = Results(protocol.hash("a file"))
    assert sent(transport) == b"HASH a file\r\n"
    feed(protocol, f"#SHA-256 of a file (5 bytes): {DIGEST}.\r\n".encode())
    assert result.value == ("a file", 5, DIGEST)


def test_hash_on_an_older_server_is_a_server_error(ready):
    protocol, transport = ready
    result = Results(protocol.hash("x"))
    feed(protocol, b"!Invalid command.\r\n")
    assert result.error(ServerError).reply == wire.INVALID_COMMAND
    assert not protocol.disconnected


def test_a_bad_digest_is_a_protocol_violation(ready):
    protocol, transport = ready
    result = Results(protocol.hash("x"))
    feed(protocol, b"#SHA-256 of x (5 bytes): " + DIGEST.upper().encode() + b".\r\n")
    assert "64 lowercase hex" in str(result.error(ProtocolViolation))
    assert transport.disconnected


def test_resume_request_tells_the_sink_the_whole_size(ready):
    protocol, transport = ready
    sink = MemorySink()
    result = Results(protocol.resume("big x", 10, sink))
    assert sent(transport) == b"RESUME 10 big x\r\n"
    feed(protocol, b"#Sending big x from byte 10 (3 bytes).\r\nabc\r\n#File big x sent successfully.\r\n", chunk=4)
    assert (result.value, sink.size, sink.value) == (3, 13, b"abc")


def test_resume_from_another_offset_is_a_protocol_violation(ready):
    protocol, transport = ready
    result = Results(protocol.resume("x", 10, MemorySink()))
    feed(protocol, b"#Sending x from byte 0 (13 bytes).\r\n")
    assert "resume at byte 10" in str(result.error(ProtocolViolation))
    assert transport.disconnected


def test_a_file_header_is_no_resume_header(ready):
    protocol, transport = ready
    result = Results(protocol.resume("x", 10, MemorySink()))
    feed(protocol, b"#Sending x (13 bytes).\r\n")
    result.error(ProtocolViolation)


def test_resume_past_the_end_is_a_server_error(ready):
    protocol, transport = ready
    result = Results(protocol.resume("x", 99, MemorySink()))
    feed(protocol, b"!Offset 99 is past the end of x (13 bytes).\r\n")
    assert result.error(ServerError).reply.startswith("Offset 99")


def test_a_stalled_resume_times_out(ready, clock):
    protocol, transport = ready
    result = Results(protocol.resume("x", 1, MemorySink()))
    feed(protocol, b"#Sending x from byte 1 (100 bytes).\r\n0123")
    clock.advance(TIMEOUT - 1)
    feed(protocol, b"45")  # progress postpones the timeout
    clock.advance(TIMEOUT - 1)
    assert not result.fired
    clock.advance(1)
    result.error(ReplyTimeout)


# -- the verifying sink -----------------------------------------------------------------


def test_verifying_sink_refuses_another_digest_or_size():
    expected = wire.Hashed("x", 5, DIGEST)
    good = VerifyingSink(MemoryCommitSink(), expected)
    good.begin(5)
    good.write(b"hel")
    good.write(b"lo")
    good.commit(False)
    bad = VerifyingSink(MemoryCommitSink(), expected)
    bad.begin(5)
    bad.write(b"hellO")
    with pytest.raises(Mismatch, match="SHA-256 mismatch"):
        bad.commit(False)
    assert not bad._inner.committed
    with pytest.raises(Mismatch, match="HASH said 5 bytes, FILE sends 6"):
        VerifyingSink(MemoryCommitSink(), expected).begin(6)


class MemoryCommitSink(MemorySink):
    committed = False

    def commit(self, overwrite: bool) -> None:
        self.committed = True

    def discard(self) -> None:
        pass


# -- the part file and its record ------------------------------------------------------


class Recorded(Transfer):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def begin(self, size: int, start: int = 0) -> None:
        self.calls.append(("begin", size, start))

    def advance(self, count: int) -> None:
        self.calls.append(("advance", count))


CONTENT = bytes(range(256)) * 40
HASHED = wire.Hashed("f", len(CONTENT), hashlib.sha256(CONTENT).hexdigest())


def withPart(tmp_path: Path, part: bytes, record: bytes | None) -> Path:
    target = tmp_path / "f"
    partPath, recordPath = partPaths(target)
    partPath.write_bytes(part)
    if record is not None:
        recordPath.write_bytes(record)
    return target


def test_record_format_round_trips(tmp_path):
    path = tmp_path / "r"
    path.write_bytes(formatRecord(HASHED))
    assert path.read_bytes() == f"sha256 {HASHED.sha256} {len(CONTENT)}\n".encode()
    assert readRecord(path) == (HASHED.sha256, len(CONTENT))


@pytest.mark.parametrize("record", [
    b"", b"garbage\n", f"sha256 {HASHED.sha256} 10240".encode(), f"sha256 {HASHED.sha256.upper()} 10240\n".encode(),
    f"sha256 {HASHED.sha256} {'9' * 21}\n".encode(), f"sha256 {HASHED.sha256} 10240\n".encode() * 2,
    f"sha256 {HASHED.sha256} -1\n".encode(),
])
def test_a_record_that_does_not_parse_is_none(tmp_path, record):
    path = tmp_path / "r"
    path.write_bytes(record)
    assert readRecord(path) is None


def test_a_good_part_is_hashed_and_resumed_and_the_bar_starts_there(tmp_path):
    target = withPart(tmp_path, CONTENT[:1000], formatRecord(HASHED))
    progress = Recorded()
    sink = PartSink(target, progress, HASHED)
    assert sink.prepare() is None
    assert sink.offset == 1000
    sink.begin(len(CONTENT))
    sink.write(CONTENT[1000:])
    sink.commit(False)
    assert target.read_bytes() == CONTENT
    assert progress.calls[0] == ("begin", len(CONTENT), 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # part renamed, record gone


@pytest.mark.parametrize("part, record, why", [
    (CONTENT[:1000], None, "not a valid record"),
    (CONTENT[:1000], b"sha256 nonsense\n", "not a valid record"),
    (CONTENT[:1000], formatRecord(wire.Hashed("f", len(CONTENT), "0" * 64)), "changed on the server"),
    (CONTENT[:1000], formatRecord(wire.Hashed("f", len(CONTENT) + 1, HASHED.sha256)), "changed on the server"),
    (CONTENT + b"more", formatRecord(HASHED), "more than the file's"),
])
def test_an_untrustworthy_part_starts_over(tmp_path, part, record, why):
    target = withPart(tmp_path, part, record)
    sink = PartSink(target, Recorded(), HASHED)
    assert why in sink.prepare()
    assert sink.offset == 0
    assert sink.partPath.stat().st_size == 0
    assert readRecord(sink.recordPath) == (HASHED.sha256, HASHED.size)  # the record now describes the new start
    sink.begin(len(CONTENT))
    sink.write(CONTENT)
    sink.commit(False)
    assert target.read_bytes() == CONTENT


def test_a_part_whose_bytes_differ_fails_the_whole_file_check_and_is_never_renamed(tmp_path):
    target = withPart(tmp_path, b"X" * 1000, formatRecord(HASHED))
    sink = PartSink(target, Recorded(), HASHED)
    assert sink.prepare() is None and sink.offset == 1000
    sink.begin(len(CONTENT))
    sink.write(CONTENT[1000:])
    with pytest.raises(Mismatch):
        sink.commit(False)
    assert not target.exists()
    sink.remove()
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_part_keeps_its_bytes_and_record(tmp_path):
    target = tmp_path / "f"
    sink = PartSink(target, Recorded(), HASHED)
    assert sink.prepare() is None
    sink.begin(len(CONTENT))
    sink.write(CONTENT[:500])
    sink.discard()
    assert sink.partPath.read_bytes() == CONTENT[:500]
    assert readRecord(sink.recordPath) == (HASHED.sha256, HASHED.size)
    assert not target.exists()


def test_a_symlink_planted_as_the_part_is_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    target = tmp_path / "f"
    partPath, recordPath = partPaths(target)
    partPath.symlink_to(outside)
    recordPath.write_bytes(formatRecord(HASHED))
    sink = PartSink(target, Recorded(), HASHED)
    sink.prepare()
    sink.begin(len(CONTENT))
    sink.write(CONTENT)
    sink.commit(False)
    assert outside.read_bytes() == b"precious"
    assert target.read_bytes() == CONTENT


def test_the_size_announced_must_be_the_hashed_one(tmp_path):
    sink = PartSink(tmp_path / "f", Recorded(), HASHED)
    sink.prepare()
    with pytest.raises(Mismatch, match="changed on the server"):
        sink.begin(len(CONTENT) - 1)


def test_the_progress_bar_starts_at_the_resumed_offset():
    import io

    from twisted.internet.task import Clock

    from echofile.client.progress import RichDisplay

    transfer = RichDisplay(io.StringIO(), Clock()).transfer("big")
    transfer.begin(1000, 400)
    task = transfer._progress.tasks[0]
    assert (task.total, task.completed) == (1000, 400)
    transfer.advance(100)
    assert task.completed == 500
    transfer.end(True)
