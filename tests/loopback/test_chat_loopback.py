"""Chat over real TCP: fan-out to many sessions, events around a large body."""

from __future__ import annotations

import resource
import time

import pytest
import pytest_twisted
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from support import PASSWORD, makeFilesFactory
from loopbackhelpers import Server

SESSIONS = int(__import__("os").environ.get("CHAT_SESSIONS", "1000"))


@pytest.fixture
def chatServer(served):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * SESSIONS + 200
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, "cannot raise the file limit for this test"
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice="pw")
    factory = makeFilesFactory(
        served, reactor, checkers=[checker], maxConnections=SESSIONS + 10, maxPerAddress=SESSIONS + 10
    )
    # A burst of connections overflows the default accept backlog (50).
    server = Server(factory, "tcp:0:interface=127.0.0.1:backlog=2048")
    pytest_twisted.blockon(server.start())
    yield server
    pytest_twisted.blockon(server.stop())
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest_twisted.inlineCallbacks
def test_say_fans_out_to_a_thousand_sessions(chatServer, capsys):
    listeners = yield gatherResults([chatServer.connect() for _ in range(SESSIONS)])
    for client in listeners:
        client.transport.write(b"AUTH " + PASSWORD.encode() + b"\n")
    yield gatherResults([c.until(lambda d: d.endswith(b"#You are logged in.\r\n")) for c in listeners])
    speaker = yield chatServer.connect()
    speaker.transport.write(b"USER alice\nAUTH pw\n")
    yield speaker.until(lambda d: d.endswith(b"#You are logged in.\r\n"))

    started = time.perf_counter()
    speaker.transport.write(b"SAY hello everyone\n")
    yield gatherResults([c.until(lambda d: d.endswith(b"*alice: hello everyone\r\n")) for c in listeners])
    elapsed = time.perf_counter() - started
    yield speaker.until(lambda d: d.endswith(b"#Said.\r\n"))
    with capsys.disabled():
        print(f"\n[chat] SAY fan-out to {SESSIONS} sessions over loopback: {elapsed * 1000:.1f} ms")
    speaker.transport.write(b"WHO\n")
    # Every guest session has its own chat name (PROTOCOL.md revision 2).
    names = sorted(["alice"] + [f"~guest{n}" for n in range(1, SESSIONS + 1)])
    who = f"#{len(names)} users online.\r\n".encode() + b"".join(n.encode() + b"\r\n" for n in names)
    yield speaker.until(lambda d: d.endswith(who))


@pytest_twisted.inlineCallbacks
def test_events_held_back_during_a_large_body(chatServer, served):
    size = 100 * 1024 * 1024
    with open(served / "huge.bin", "wb") as f:
        f.truncate(size)  # sparse: 100 MB of zeros without writing them
    reader = yield chatServer.connect()
    speaker = yield chatServer.connect()
    for client in (reader, speaker):
        client.transport.write(b"AUTH " + PASSWORD.encode() + b"\n")
        yield client.until(lambda d: d.endswith(b"#You are logged in.\r\n"))
    reader.transport.write(b"FILE huge.bin\n")
    header = b"#Sending huge.bin (%d bytes).\r\n" % size
    yield reader.until(lambda d: len(d) > 1024 * 1024)
    assert header in reader.data[:4096]
    for i in range(5):
        speaker.transport.write(b"SAY during %d\n" % i)
    yield speaker.until(lambda d: d.count(b"#Said.") == 5)
    # The reader logged in first (~guest1), the speaker second.
    yield reader.until(lambda d: d.endswith(b"*~guest2: during 4\r\n"))
    start = reader.data.index(header) + len(header)
    assert start < 4096
    body = reader.data[start : start + size]
    assert body.count(b"\x00") == size  # nothing inside the body but the file
    rest = reader.data[start + size :]
    assert rest == b"\r\n#File huge.bin sent successfully.\r\n" + b"".join(
        b"*~guest2: during %d\r\n" % i for i in range(5)
    )
