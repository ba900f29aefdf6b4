"""
The command line (issue #14, items 5 and 6): operands after ``--``,
HOST:PORT and [V6ADDR]:PORT, --version, --help, -o -, duplicate base names,
--parents, get -r with hostile names, and the messages people see.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import pytest_twisted
from clienthelpers import NO_HASH_NOTICE, Listening, names, runClient, selfSignedCertificate
from support import PASSWORD
from twisted.internet import reactor
from twisted.internet.endpoints import HostnameEndpoint, serverFromString
from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer


from echofile.client import Interrupted
from echofile.client.cli import endpoint, parseArguments
from echofile.client.console import Streams, UsageError
from echofile.client.errors import describeTLSError
from echofile.client.main import run

NOTICE = NO_HASH_NOTICE + "\n"  # these fakes are revision-1 servers: HASH is an invalid command there


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_operands_after_double_dash():
    assert parseArguments(["get", "--", "-x.txt"]).names == ["-x.txt"]
    assert parseArguments(["get", "a", "-o", "d", "--", "-x", "-y"]).names == ["a", "-x", "-y"]
    assert parseArguments(["list", "--", "-dir"]).directory == "-dir"
    assert parseArguments(["echo", "--", "-n", "x"]).text == ["-n", "x"]


@pytest_twisted.inlineCallbacks
def test_get_a_name_starting_with_a_dash(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"FILE -x.txt":
            transport.write(b"#Sending -x.txt (2 bytes).\r\nok\r\n#File -x.txt sent successfully.\r\n")
        elif line == b"QUIT":
            transport.write(b"#Bye.\r\n")
            transport.loseConnection()

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "-o", str(out), "--", "-x.txt")
    assert (result.status, result.out, result.err) == (0, "-x.txt has been saved.\n", NOTICE)
    assert (out / "-x.txt").read_bytes() == b"ok"


def test_host_port_forms():
    for text, host, port in [
        ("files.example.org", b"files.example.org", 8008),
        ("localhost:9000", b"localhost", 9000),
        ("[::1]:9000", b"::1", 9000),
        ("[::1]", b"::1", 8008),
        ("127.0.0.1:1", b"127.0.0.1", 1),
    ]:
        where = endpoint(reactor, text, 8008, 5)
        assert isinstance(where, HostnameEndpoint), text
        assert (where._hostBytes, where._port) == (host, port), text
    assert not isinstance(endpoint(reactor, "tcp:host=127.0.0.1:port=1", 8008, 5), HostnameEndpoint)
    with pytest.raises(UsageError, match="port 70000 out of range"):
        endpoint(reactor, "localhost:70000", 8008, 5)


@pytest_twisted.inlineCallbacks
def test_connect_to_v6_loopback_by_bracketed_address(served):
    from support import makeFilesFactory

    factory = makeFilesFactory(served, reactor)
    server = Listening(factory)
    server.port = yield serverFromString(reactor, "tcp6:0:interface=\\:\\:1").listen(server.tracking)
    try:
        result = yield runClient("--connect", f"[::1]:{server.port.getHost().port}", "list", "docs")
    finally:
        yield server.stop()
    assert (result.status, result.out, result.err) == (0, "9 readme.txt\n", "")


@pytest_twisted.inlineCallbacks
def test_version_and_help_mention_every_command():
    result = yield runClient("--version")
    assert result.status == 0 and result.out.startswith("echofile-client ") and result.err == ""
    result = yield runClient("--help")
    assert result.status == 0
    for command in ("get NAME...", "list [DIR]", "chat", "echo [TEXT...]", "--parents", "-r", "--version"):
        assert command in result.out, command
    result = yield runClient("get", "--help")
    assert result.status == 0 and "--parents" in result.out and "--recursive" in result.out


@pytest_twisted.inlineCallbacks
def test_same_base_name_twice_is_refused_before_anything_is_fetched(out):
    result = yield runClient("--connect", "tcp:host=127.0.0.1:port=1", "get", "a/readme.txt", "b/readme.txt",
                             "-o", str(out), environ={})
    assert result.status == 2
    assert result.err == (
        "echofile-client: a/readme.txt and b/readme.txt would both be saved as readme.txt "
        "(use --parents to keep their folders)\n"
    )
    assert names(out) == []


@pytest_twisted.inlineCallbacks
def test_parents_keeps_folders(fileServer, served, out):
    (served / "other").mkdir()
    (served / "other" / "readme.txt").write_bytes(b"other one")
    result = yield runClient("--connect", fileServer.endpoint, "get", "--parents", "docs/readme.txt",
                             "other/readme.txt", "notes.txt", "-o", str(out))
    assert (result.status, result.err) == (0, "")
    assert (out / "docs" / "readme.txt").read_bytes() == (served / "docs" / "readme.txt").read_bytes()
    assert (out / "other" / "readme.txt").read_bytes() == b"other one"
    assert names(out) == ["docs", "notes.txt", "other"]


@pytest_twisted.inlineCallbacks
def test_recursive_get(fileServer, served, out):
    (served / "docs" / "deeper").mkdir()
    (served / "docs" / "deeper" / "x.bin").write_bytes(b"\x00\x01")
    result = yield runClient("--connect", fileServer.endpoint, "get", "-r", "docs", "-o", str(out))
    assert (result.status, result.err) == (0, "")
    assert sorted(result.out.splitlines()) == ["docs/deeper/x.bin has been saved.", "docs/readme.txt has been saved."]
    assert (out / "docs" / "readme.txt").read_bytes() == (served / "docs" / "readme.txt").read_bytes()
    assert (out / "docs" / "deeper" / "x.bin").read_bytes() == b"\x00\x01"
    assert names(out / "docs") == ["deeper", "readme.txt"]


@pytest_twisted.inlineCallbacks
def test_recursive_get_never_writes_outside_the_output_folder(fakeServer, tmp_path):
    """A hostile listing: traversal, absolute paths, separators and control characters in names."""
    out = tmp_path / "out"
    evil = [
        "1 ..", "1 .", "1 ../escape.txt", "1 /etc/passwd-copy", "1 a/b.txt", "1 a\\b.txt",
        "1 bell\x07.txt", "1 esc\x1b[2J.txt", "- ../up/", "- /abs/", "1 fine.txt",
    ]
    listing = ("#%d entries in top.\r\n" % len(evil) + "".join(line + "\r\n" for line in evil)).encode()

    def script(line: bytes, transport) -> None:
        if line == b"LIST top":
            transport.write(listing)
        elif line.startswith(b"FILE "):
            name = line[5:]
            transport.write(b"#Sending %s (1 bytes).\r\nX\r\n#File %s sent successfully.\r\n" % (name, name))
        elif line == b"QUIT":
            transport.write(b"#Bye.\r\n")
            transport.loseConnection()

    server = yield fakeServer(script)
    result = yield runClient("--connect", server.endpoint, "get", "-r", "top", "-o", str(out))
    assert result.status == 1
    assert result.out == "top/fine.txt has been saved.\n"
    assert result.err.splitlines()[-1] == NO_HASH_NOTICE  # said once, before the first file
    assert len(result.err.splitlines()) == len(evil) - 1 + 1
    assert all("unsafe name from the server, skipped" in line for line in result.err.splitlines()[:-1])
    assert "\x1b" not in result.err and "\x07" not in result.err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["out", "out/top", "out/top/fine.txt"]


@pytest_twisted.inlineCallbacks
def test_output_to_stdout(fakeServer):
    def script(line: bytes, transport) -> None:
        if line == b"FILE bin":
            transport.write(b"#Sending bin (4 bytes).\r\n\x00\xff\r\n\r\n#File bin sent successfully.\r\n")
        elif line == b"QUIT":
            transport.write(b"#Bye.\r\n")
            transport.loseConnection()

    server = yield fakeServer(script)
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8")
    streams = Streams(io.StringIO(), stdout, io.StringIO())
    status = yield run(reactor, ["--connect", server.endpoint, "get", "bin", "-o", "-"], streams,
                       {"ECHOFILE_PASSWORD": PASSWORD})
    stdout.flush()
    assert (status, streams.stderr.getvalue()) == (0, NOTICE)
    assert raw.getvalue() == b"\x00\xff\r\n"
    result = yield runClient("get", "a", "b", "-o", "-")
    assert result.status == 2 and "-o - writes one file to standard output" in result.err


@pytest_twisted.inlineCallbacks
def test_saved_message_says_where_on_a_terminal(fakeServer, out):
    def script(line: bytes, transport) -> None:
        if line == b"FILE sub/readme.txt":
            transport.write(b"#Sending sub/readme.txt (1 bytes).\r\nX\r\n#File sub/readme.txt sent successfully.\r\n")
        elif line == b"QUIT":
            transport.write(b"#Bye.\r\n")
            transport.loseConnection()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    server = yield fakeServer(script)
    streams = Streams(io.StringIO(), Terminal(), io.StringIO())
    status = yield run(reactor, ["--connect", server.endpoint, "-q", "get", "sub/readme.txt", "-o", str(out)], streams,
                       {"ECHOFILE_PASSWORD": PASSWORD})
    assert status == 0
    assert streams.stdout.getvalue() == f"sub/readme.txt has been saved as {out / 'readme.txt'}.\n"


def test_ctrl_c_says_interrupted_not_connection_lost(tmp_path):
    """SIGINT (Ctrl-C) in the middle of a body: one line, "interrupted", status 130, no file left behind."""
    import os
    import signal
    import socket
    import subprocess
    import threading
    import time

    from clienthelpers import CLIENT, clientEnv

    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"#Server Ready.\r\n")
            seen = b""
            while b"FILE big" not in seen:
                seen += conn.recv(4096)
                if b"HASH big" in seen and b"#Invalid" not in seen:
                    conn.sendall(b"!Invalid command.\r\n")  # a revision-1 server
                    seen += b"#Invalid"
                if b"AUTH" in seen and b"#You" not in seen:
                    conn.sendall(b"#You are logged in.\r\n")
                    seen += b"#You"
            conn.sendall(b"#Sending big (1000 bytes).\r\n0123")
            done.wait(60)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [*CLIENT, "--connect", f"tcp:host=127.0.0.1:port={listener.getsockname()[1]}", "get", "big", "-o", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clientEnv(),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".part") for p in out.iterdir()):  # the body has begun
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        listener.close()
    assert (process.returncode, stdout, stderr) == (130, b"", NOTICE.encode() + b"echofile-client: interrupted\n")
    assert names(out) == []


def test_tls_verification_failure_hints_at_trust_roots():
    from OpenSSL.SSL import Error
    from twisted.python.failure import Failure

    reason = Failure(Error([("SSL routines", "", "certificate verify failed")]))
    text = describeTLSError(reason)
    assert text.startswith("certificate verify failed (") and "trustRoots=" in text


def test_trust_roots_must_be_a_folder(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("not really")
    with pytest.raises(UsageError, match="trustRoots= must name a folder of PEM certificates; .* is a file"):
        endpoint(reactor, f"tls:localhost:8443:trustRoots={pem}", 8008, 5)
    folder = tmp_path / "cas"
    folder.mkdir()
    assert endpoint(reactor, f"tls:localhost:8443:trustRoots={folder}", 8008, 5) is not None


def test_interrupted_is_a_client_error():
    assert str(Interrupted()) == "interrupted"


@implementer(IHandshakeListener)
class HandshakeForwarding(ProtocolWrapper):
    """A tracking wrapper that still tells the session when TLS is up (it greets only then)."""

    def handshakeCompleted(self) -> None:
        self.wrappedProtocol.handshakeCompleted()


@pytest.fixture
def tlsServer(served, tmp_path):
    from support import makeFilesFactory

    key, cert, roots = selfSignedCertificate(tmp_path / "tls")
    server = Listening(makeFilesFactory(served, reactor))
    server.tracking.protocol = HandshakeForwarding
    description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    server.port = pytest_twisted.blockon(serverFromString(reactor, description).listen(server.tracking))
    yield server, cert, roots
    pytest_twisted.blockon(server.stop())


@pytest_twisted.inlineCallbacks
def test_tls_trust_roots_folder_works_file_is_refused_and_failure_hints(tlsServer):
    server, cert, roots = tlsServer
    base = f"tls:host=127.0.0.1:port={server.port.getHost().port}"
    result = yield runClient("--connect", base, "list", "docs")
    assert result.status == 2
    assert "certificate verify failed (if the server's certificate comes from your own authority, add trustRoots=" in result.err
    result = yield runClient("--connect", f"{base}:trustRoots={cert}", "list", "docs")
    assert result.status == 2
    assert result.err == (
        f"echofile-client: trustRoots= must name a folder of PEM certificates; {cert} is a file\n"
    )
    result = yield runClient("--connect", f"{base}:trustRoots={roots}", "list", "docs")
    assert (result.status, result.out, result.err) == (0, "9 readme.txt\n", "")
