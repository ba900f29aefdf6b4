"""
Property-based tests (hypothesis) of the line protocol on StringTransport.

Arbitrary byte streams — commands real and broken, passwords right and
wrong, telnet IAC sequences, CR/LF in every combination, invalid UTF-8,
over-long lines, raw garbage — cut into arbitrary packets, with or without
a login first, sometimes with the client vanishing half way.  Whatever
arrives, the session:

- never logs a failure (traceback) and never answers ``!Internal error.``;
- writes only well-formed output: reply lines starting with ``#``, ``!`` or
  ``*``, ending in CR LF, valid UTF-8 without control characters; a body
  exactly as long as its ``#Sending NAME (N bytes).`` header followed by
  CR LF and the trailer; a listing of exactly the announced entry count;
- answers every complete non-blank command line exactly once, in order, as
  a small reference model of the contract predicts, or ends the session
  with one of the contract's last words (and then says nothing more);
- ends with ``!Login timeout.`` or ``!Idle timeout.`` when left alone.

The expected number of command lines comes from an independent model of the
framing (telnet IAC removal per RFC 854, LF/CR LF, the line limit), not from
the code under test.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import PASSWORD, FakeThreads, connect, drainTransfer, makeFilesFactory, populate
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from echofile import wire
from echofile.echo import EchoFactory
from echofile.files import HELP
from echofile.hashing import FileHasher
from echofile.limits import ConnectionLimiter
from echofile.lockout import LoginPenalties
from echofile.transfer import BodySender

MAX_LINE = 64
GREETING = wire.GREETING.encode()
#: Replies after which the server closes the connection and says nothing more.
LAST_WORDS = {
    b"#Bye.", b"!Line too long.", b"!Too many failed attempts.", b"!Login timeout.", b"!Idle timeout.",
}
NEEDS_LOGIN = {"FILE", "HASH", "LIST", "MSG", "NICK", "RESUME", "SAY", "WHO"}
COMMANDS = {"AUTH", "FILE", "HASH", "HELP", "LIST", "MSG", "NICK", "QUIT", "RESUME", "SAY", "USER", "WHO"}

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: The main property gets more examples (about 10 s on the project's 2-core machines).
FUZZ_MORE = settings(FUZZ, max_examples=1200)


# -- the served tree and log observation ---------------------------------------------------


@pytest.fixture(scope="module")
def fuzzRoot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "root"
    root.mkdir()
    populate(root)
    (root / "fake-replies.txt").write_bytes(b"\r\n#Sending fake (3 bytes).\r\n!x\r\n#1 entries in /.\r\n")
    (root.parent / "secret").write_bytes(b"outside")
    return root


@pytest.fixture(scope="module")
def failures() -> Iterator[list[dict]]:
    """Every log event carrying a failure, for the whole module (checked per example)."""
    events: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    gc.collect()
    globalLogPublisher.removeObserver(observe)
    assertNoFailures(events)


def assertNoFailures(failures: list[dict]) -> None:
    # "Unhandled error in Deferred" is logged when the Deferred is collected: the young
    # generations here (cheap, and where this example's garbage mostly is), everything
    # once more at the end of the module.
    gc.collect(1)
    if failures:
        failure = failures[0]["log_failure"]
        text = failure.getTraceback()
        failures.clear()
        pytest.fail(f"a failure was logged:\n{text}")


# -- input: commands, noise and packet boundaries --------------------------------------------

NAMES = [
    "notes.txt", "docs", "docs/readme.txt", "binary.bin", "empty.bin", "with space.txt", "missing",
    "../secret", "..", "/", "\\docs\\readme.txt", "docs/../notes.txt", "a\x00b", "fake-replies.txt",
    "\x1b[31m", "\u009b", "\u202eevil",
]
WORDS = sorted(COMMANDS) + ["help", "Quit", "file", "list", "NOPE", "h3lp", "FILE\t", "auth"]

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
argument = st.one_of(
    st.sampled_from(NAMES), st.sampled_from([PASSWORD, "wrong", "wonder land", "alice", "guest", "bob"]), text,
)
#: Whole commands that do something (the random ones mostly fail early).
USEFUL = [
    f"AUTH {PASSWORD}", "USER alice", "AUTH wonder land", "AUTH wrong", "USER guest", "HELP", "QUIT", "WHO",
    "FILE notes.txt", "FILE binary.bin", "FILE fake-replies.txt", "FILE empty.bin", "file docs/readme.txt",
    "FILE ../secret", "FILE missing", "LIST", "LIST docs", "LIST ..", "SAY hi\u202e there \x1b[2J",
    "MSG guest hi \x9b31m", "MSG alice hello", "MSG nobody x", "NICK ada", "MSG ~guest1 hi", "MSG ~ada hi",
    "HASH binary.bin", "HASH notes.txt", "HASH ../secret", "HASH docs", "RESUME 1000 binary.bin",
    "RESUME 0 with space.txt", "RESUME 12 notes.txt", "RESUME 13 notes.txt", "RESUME -1 notes.txt", "RESUME x",
]
command = st.one_of(
    st.sampled_from(USEFUL).map(str.encode),
    st.sampled_from(USEFUL).map(str.encode),
    st.sampled_from(WORDS).map(str.encode),
    st.builds(lambda w, a: f"{w} {a}".encode("utf-8", "surrogatepass"), st.sampled_from(WORDS), argument),
)
noise = st.one_of(
    st.binary(max_size=16),
    st.sampled_from([
        b"\xff\xfb\x01", b"\xff\xfd\x03", b"\xff\xfa\x18\x01\xff\xf0", b"\xff\xfa", b"\xff\xf0", b"\xff\xff",
        b"\xff", b"\xff\xf4", b"\xff\xf1", b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b"\xc3\x28", b"\xed\xa0\x80",
    ]),
    st.integers(MAX_LINE - 2, MAX_LINE + 3).map(lambda n: b"x" * n),
)
ending = st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\n", b"\r\n", b"\n", b"", b"\r", b"\n\n", b" \r\n"])
piece = st.tuples(st.one_of(command, command, command, noise), ending).map(lambda t: t[0] + t[1])


@st.composite
def sessions(draw: st.DrawFn) -> tuple[bytes, list[bytes], bool, int | None, list[float]]:
    """(stream, packets, impatient, drop-after-packet, clock advances between packets)."""
    stream = b"".join(draw(st.lists(piece, max_size=14)))
    if draw(st.sampled_from([True, True, False])):
        stream = f"AUTH {PASSWORD}\r\n".encode() + stream
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    packets = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    impatient = draw(st.booleans())  # deliver even while the session holds its input
    drop = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, len(packets) - 1)))
    advances = draw(st.lists(st.sampled_from([0.0, 0.0, 0.3, 1.0]), min_size=len(packets), max_size=len(packets)))
    return stream, packets, impatient, drop, advances


# -- an independent model of the framing ------------------------------------------------------


def telnetData(stream: bytes) -> bytes:
    """The data bytes of a telnet stream (RFC 854): commands, negotiation and sub-negotiation removed."""
    out = bytearray()
    i, n = 0, len(stream)
    while i < n:
        byte = stream[i]
        if byte != 0xFF:
            out.append(byte)
            i += 1
            continue
        if i + 1 >= n:
            break
        verb = stream[i + 1]
        if verb == 0xFF:  # IAC IAC: a literal 0xFF
            out.append(0xFF)
            i += 2
        elif verb in (0xFB, 0xFC, 0xFD, 0xFE):  # WILL WONT DO DONT <option>
            i += 3
        elif verb == 0xFA:  # SB ... IAC SE
            end = stream.find(b"\xff\xf0", i + 2)
            while end != -1 and _escapedIac(stream, i + 2, end):
                end = stream.find(b"\xff\xf0", end + 1)
            if end == -1:
                break  # never ends: everything after it is sub-negotiation
            i = end + 2
        else:  # a two-byte command (NOP, IP, ...)
            i += 2
    return bytes(out)


def _escapedIac(stream: bytes, start: int, at: int) -> bool:
    """Is the IAC at C{at} the second half of an ``IAC IAC`` inside sub-negotiation data from C{start}?"""
    j, run = at - 1, 0
    while j >= start and stream[j] == 0xFF:
        run += 1
        j -= 1
    return run % 2 == 1


def commandLines(stream: bytes) -> tuple[list[bytes], bool]:
    """The non-blank command lines the server must answer, and whether a line over the limit follows them."""
    lines = telnetData(stream).split(b"\n")
    tail = lines.pop()
    result = []
    for raw in lines:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if len(line) > MAX_LINE:
            return result, True
        if line.strip(b" \t"):
            result.append(line)
    return result, len(tail) >= MAX_LINE + 2  # an unfinished line is refused once it cannot fit


# -- reading what the server wrote --------------------------------------------------------------

REPLY = re.compile(rb"[#!*][^\x00-\x1f\x7f]*")
SENDING = re.compile(rb"#Sending (.*?)(?: from byte \d+)? \((\d+) bytes\)\.")
ENTRIES = re.compile(rb"#(\d+) entries in (.*)\.")
USERS = re.compile(rb"#(\d+) users online\.")
UNSAFE_EVENT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")


def parseOutput(data: bytes, allowTruncatedBody: bool) -> tuple[list[bytes], list[str], bool]:
    """
    Split the server's output into reply units (a body or listing counts
    with its header) and events; fail on anything malformed.

    @return: the units, the events, and whether the output stopped inside
        a body (allowed only with C{allowTruncatedBody}: the client vanished).
    """
    units: list[bytes] = []
    events: list[str] = []
    pos = 0

    def line(reply: bool = True) -> bytes:
        nonlocal pos
        end = data.find(b"\r\n", pos)
        assert end != -1, f"output ends without CR LF: {data[pos:pos + 200]!r}"
        text, pos = data[pos:end], end + 2
        assert not reply or REPLY.fullmatch(text), f"malformed reply line {text!r}"
        text.decode("utf-8")
        return text

    while pos < len(data):
        reply = line()
        if reply.startswith(b"*"):
            event = reply.decode("utf-8")
            assert not UNSAFE_EVENT.search(event), f"unsanitised event {event!r}"
            events.append(event)
            continue
        units.append(reply)
        if match := SENDING.fullmatch(reply):
            size = int(match.group(2))
            if pos + size + 2 > len(data) and allowTruncatedBody:
                return units, events, True
            pos += size
            assert data[pos:pos + 2] == b"\r\n", f"no CR LF after a {size}-byte body: {data[pos:pos + 40]!r}"
            pos += 2
            assert line() == b"#File " + match.group(1) + b" sent successfully."
        elif match := ENTRIES.fullmatch(reply):
            for _ in range(int(match.group(1))):
                entry = line(reply=False)
                assert re.fullmatch(rb"(-|\d+) [^/\x00-\x1f\x7f]+/?", entry), f"bad listing entry {entry!r}"
        elif match := USERS.fullmatch(reply):
            for _ in range(int(match.group(1))):
                user = line(reply=False)
                assert re.fullmatch(rb"[A-Za-z0-9._-]{1,64}|~[A-Za-z0-9._-]{1,32}", user), f"bad chat name in WHO: {user!r}"
    return units, events, False


def expectedReply(line: bytes, loggedIn: bool) -> bytes | None:
    """What the contract says about a command line, where that does not depend on files or passwords."""
    try:
        text = line.decode("utf-8").strip(" \t")
    except UnicodeDecodeError:
        return b"!Invalid command."
    word = re.match(r"[^ \t]+", text).group(0)  # type: ignore[union-attr]
    if not (word.isascii() and word.isalpha()) or word.upper() not in COMMANDS:
        return b"!Invalid command."
    word = word.upper()
    if word == "HELP":
        return HELP.encode()
    if word == "QUIT":
        return b"#Bye."
    if word in NEEDS_LOGIN and not loggedIn:
        return b"!You are not logged in."
    if word == "AUTH" and loggedIn:
        return b"!Already logged in."
    return None


def checkAnswers(units: list[bytes], commands: list[bytes], tooLong: bool, complete: bool) -> bool:
    """
    Every unit after the greeting answers the next command line.

    @param complete: the client stayed to the end, so every line must be answered.
    @return: whether the session is logged in at the end.
    """
    assert units and units[0] == GREETING, units[:1]
    answers = units[1:]
    for index, reply in enumerate(answers[:-1]):
        assert reply not in LAST_WORDS, f"{reply!r} was not the last thing said: {answers[index + 1:]!r}"
    assert len(answers) <= len(commands) + 1, (answers, commands)
    loggedIn = False
    for index, (line, reply) in enumerate(zip(commands, answers)):
        expected = expectedReply(line, loggedIn)
        if index == len(answers) - 1 and reply in (b"!Too many failed attempts.", b"!Login timeout.", b"!Idle timeout."):
            break  # closing replies that do not answer a particular command (checked below)
        if expected is not None:
            assert reply == expected, (line, reply)
        if reply == b"#You are logged in.":
            assert re.match(rb"[ \t]*auth[ \t]", line, re.IGNORECASE), (line, reply)
            loggedIn = True
    last = answers[-1] if answers else None
    if len(answers) == len(commands) + 1:
        assert last in (b"!Line too long.", b"!Login timeout.", b"!Idle timeout."), (last, commands)
        assert last != b"!Line too long." or tooLong
    elif complete and last not in LAST_WORDS:
        assert len(answers) == len(commands) and not tooLong, (answers, commands, tooLong)
    if last == b"!Too many failed attempts.":
        failing = commands[len(answers) - 1]
        assert re.match(rb"[ \t]*auth[ \t]", failing, re.IGNORECASE), failing
    return loggedIn


# -- driving a session as the reactor would --------------------------------------------------------


def pump(transport, clock: Clock, seconds: float, step: float = 0.5, threads: FakeThreads | None = None) -> None:
    """Let bodies flow, HASH threads finish and time pass (AUTH failure delays), in steps."""
    elapsed = 0.0
    while True:
        while threads is not None and threads.pending:
            threads.runNext()
        drainTransfer(transport)
        if elapsed >= seconds:
            return
        clock.advance(step)
        elapsed += step


def vanish(protocol, transport) -> None:
    """The peer went away: what a TCP transport does (stop its producer, then tell the protocol)."""
    if transport.producer is not None and transport.producer is not protocol:
        transport.producer.stopProducing()
    elif transport.producer is protocol:
        protocol.stopProducing()
    transport.disconnected = True
    protocol.connectionLost(Failure(ConnectionLost("peer vanished")))


def closed(protocol, transport) -> None:
    """The server's own close completed."""
    transport.disconnected = True
    protocol.connectionLost(Failure(ConnectionDone()))


@FUZZ_MORE
@given(session=sessions())
def test_any_stream_gets_well_formed_answers(fuzzRoot: Path, failures: list[dict], session) -> None:
    stream, packets, impatient, drop, advances = session
    clock = Clock()
    threads = FakeThreads()  # HASH answers once the test runs its thread: input is held meanwhile
    factory = makeFilesFactory(
        fuzzRoot, clock, checkers=[InMemoryUsernamePasswordDatabaseDontUse(alice="wonder land")],
        maxLine=MAX_LINE, penalties=LoginPenalties(clock, maxFailures=4), hashes=FileHasher(threads),
    )
    # A bystander logged in as alice sees the fuzzed session's chat events.
    bystander, bystanderT = connect(factory, port=1)
    bystander.dataReceived(b"USER alice\r\nAUTH wonder land\r\n")
    bystanderT.clear()

    protocol, transport = connect(factory, port=2)
    for index, (packet, advance) in enumerate(zip(packets, advances)):
        if not impatient:  # a TCP transport delivers nothing while paused
            for _ in range(20):
                if transport.producerState != "paused" or transport.disconnecting:
                    break
                pump(transport, clock, 0.5, threads=threads)
        protocol.dataReceived(packet)
        if index == drop:  # gone right after sending, maybe before a body started to flow
            vanish(protocol, transport)
            break
        pump(transport, clock, advance, threads=threads)
    vanished = drop is not None
    if not vanished:
        pump(transport, clock, 10, threads=threads)  # answers delayed by failed AUTHs (3 at most, 1 s each), pipelined lines
    commands, tooLong = commandLines(stream)

    output = transport.value()
    units, events, truncated = parseOutput(output, allowTruncatedBody=vanished)
    event("client vanished inside a body" if truncated else "client vanished" if vanished else "client stayed")
    loggedIn = checkAnswers(units, commands, tooLong, complete=not vanished)
    event(f"ended with {units[-1].decode()}" if units[-1] in LAST_WORDS else "still open")
    for kind, pattern in [("body", SENDING), ("listing", ENTRIES), ("who", USERS)]:
        if any(pattern.fullmatch(unit) for unit in units):
            event(f"has a {kind}")
    if events:
        event("has an event")
    ended = bool(units) and units[-1] in LAST_WORDS
    if not vanished:
        assert transport.disconnecting == ended, (units[-1:], transport.disconnecting)
        if not ended:  # left alone, a session is closed by the login deadline or the idle timeout
            pump(transport, clock, 400, step=30, threads=threads)
            last = parseOutput(transport.value(), allowTruncatedBody=False)[0][-1]
            assert last == (b"!Idle timeout." if loggedIn else b"!Login timeout."), last
            assert transport.disconnecting
    assert b"!Internal error." not in output
    if not vanished:
        closed(protocol, transport)
        before = transport.value()
        protocol.dataReceived(b"HELP\r\n")  # a late packet after the close is ignored
        pump(transport, clock, 15, threads=threads)
        assert transport.value() == before
    else:
        pump(transport, clock, 15, threads=threads)  # delayed AUTH answers for a session that is gone
        assert transport.value() == output, "the server wrote to a connection that was lost"
    assert not isinstance(transport.producer, BodySender) or transport.disconnected
    assert protocol not in factory.sessions.sessions
    # The bystander saw only complete, sanitised event lines.
    bystanderOutput = bystanderT.value()
    assert parseOutput(bystanderOutput, allowTruncatedBody=False)[0] in ([], [b"!Idle timeout."])
    assert factory.limiter.countFor("127.0.0.1") == 1  # only the bystander's slot is still taken
    assertNoFailures(failures)


@FUZZ
@given(
    before=st.binary(max_size=64),
    streams=st.lists(st.tuples(st.sampled_from(["FILE", "LIST", "WHO", "SAY", "MSG guest"]), argument), max_size=6),
    cuts=st.lists(st.integers(0, 4096), max_size=8),
)
def test_pipelined_commands_after_login_cut_anywhere(fuzzRoot: Path, failures: list[dict], before, streams, cuts) -> None:
    """Logged in, many pipelined commands that produce bodies and listings: output stays parseable and complete."""
    clock = Clock()
    factory = makeFilesFactory(fuzzRoot, clock, maxLine=MAX_LINE)
    protocol, transport = connect(factory)
    stream = f"AUTH {PASSWORD}\r\n".encode() + before.replace(b"\n", b"") + b"\n" + b"".join(
        f"{word} {arg}".encode() + b"\r\n" for word, arg in streams
    )
    positions = sorted({c % (len(stream) + 1) for c in cuts})
    for a, b in zip([0, *positions], [*positions, len(stream)]):
        protocol.dataReceived(stream[a:b])
        drainTransfer(transport)
    pump(transport, clock, 5)
    commands, tooLong = commandLines(stream)
    units, _, _ = parseOutput(transport.value(), allowTruncatedBody=False)
    checkAnswers(units, commands, tooLong, complete=True)
    closed(protocol, transport)
    assertNoFailures(failures)


# -- echo -----------------------------------------------------------------------------------------


@FUZZ
@given(packets=st.lists(st.binary(max_size=512), max_size=30), halfClose=st.booleans())
def test_echo_returns_any_stream_whatever_the_packets(packets: list[bytes], halfClose: bool) -> None:
    factory = EchoFactory(Clock(), ConnectionLimiter(10, 10, "echo"), 300.0)
    protocol, transport = connect(factory)  # type: ignore[arg-type]
    for packet in packets:
        protocol.dataReceived(packet)
    assert transport.value() == b"".join(packets)
    if halfClose:
        protocol.readConnectionLost()
        assert transport.disconnecting
        assert transport.value() == b"".join(packets)
