"""
TLS end to end: ``twistd echofile --files ssl:...`` with a certificate made
here, ``openssl s_client`` and ``echofile-client --connect tls:...`` as real
peers; old protocol versions refused; a plaintext client and a stalled
handshake cut off by the (short) login deadline.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from deployhelpers import Certificate, makeCertificate, requireTool, runClient, startServer, terminate
from e2ehelpers import PASSWORD, Server, stop
from support import populate

IDLE = 2.0
LOGIN = 3.0
BIG_NAME = "big.bin"
BIG_SIZE = 12 * 1024 * 1024 + 12345  # several MB, not a multiple of any chunk size


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return makeCertificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = populate(tmp_path_factory.mktemp("served"))
    (root / BIG_NAME).write_bytes(os.urandom(BIG_SIZE))
    return root


@pytest.fixture(scope="module")
def tlsServer(certificate: Certificate, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = startServer(
        tmp_path_factory.mktemp("logs"), root,
        "--echo", "tcp:0:interface=127.0.0.1",
        "--files", f"ssl:0:interface=127.0.0.1:privateKey={certificate.key}:certKey={certificate.cert}",
        "--idle-timeout", str(IDLE),
        "--login-timeout", str(LOGIN),
        ready=r"FilesFactory \(TLS\) starting on (\d+)",
    )
    yield server
    stop(server)


def sClient(port: int, *options: str, data: bytes = b"", env: dict[str, str] | None = None, timeout: float = 20):
    return subprocess.run(
        [requireTool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", *options],
        input=data, capture_output=True, timeout=timeout, env=env,
    )


def test_openssl_s_client_whole_session(tlsServer: Server, certificate: Certificate, root: Path):
    """A real TLS peer, certificate verified, through login, LIST, two FILEs and QUIT."""
    commands = b"HELP\r\nAUTH " + PASSWORD.encode() + b"\r\nLIST\r\nFILE notes.txt\r\nFILE binary.bin\r\nQUIT\r\n"
    result = sClient(
        tlsServer.files_port, "-quiet", "-verify_return_error", "-CAfile", str(certificate.cert),
        "-verify_ip", "127.0.0.1", data=commands,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    notes, binary = (root / "notes.txt").read_bytes(), (root / "binary.bin").read_bytes()
    expected = (
        b"#Server Ready.\r\n"
        b"#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO.\r\n"
        b"#You are logged in.\r\n"
        b"#6 entries in /.\r\n"
        + b"".join(
            f"{size} {name}\r\n".encode()
            for size, name in [
                (BIG_SIZE, BIG_NAME), (len(binary), "binary.bin"), ("-", "docs/"), (0, "empty.bin"),
                (len(notes), "notes.txt"), (6, "with space.txt"),
            ]
        )
        + f"#Sending notes.txt ({len(notes)} bytes).\r\n".encode() + notes + b"\r\n#File notes.txt sent successfully.\r\n"
        + f"#Sending binary.bin ({len(binary)} bytes).\r\n".encode() + binary
        + b"\r\n#File binary.bin sent successfully.\r\n"
        + b"#Bye.\r\n"
    )
    assert result.stdout == expected
    # Over TLS the login draws no clear-text warning.
    tlsServer.waitLog(r"files: 127\.0\.0\.1:\d+ logged in as guest")
    assert "clear text" not in tlsServer.logText()


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_refused(tlsServer: Server, version: str, tmp_path: Path, certificate: Certificate):
    """
    Twisted's CertificateOptions (what ``ssl:`` builds) has a TLS 1.2 minimum.
    The client is made willing to speak the old version (no system openssl.cnf,
    security level 0); a control server shows that it really can.
    """
    permissive = dict(os.environ, OPENSSL_CONF="/dev/null")
    options = (version, "-cipher", "DEFAULT:@SECLEVEL=0")
    refused = sClient(tlsServer.files_port, *options, env=permissive)
    output = (refused.stdout + refused.stderr).decode(errors="replace")
    assert refused.returncode != 0
    assert "alert protocol version" in output, output
    # Control: the same client against an openssl server that allows the old version.
    control = subprocess.Popen(
        [requireTool("openssl"), "s_server", "-accept", "127.0.0.1:0", "-key", str(certificate.key),
         "-cert", str(certificate.cert), *options],
        # stdin stays open: s_server quits at EOF on it.
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=permissive,
    )
    try:
        port = None
        for line in control.stdout:  # type: ignore[union-attr]
            match = re.match(rb"ACCEPT 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None, "openssl s_server did not report its port"
        accepted = sClient(port, *options, env=permissive)
        text = accepted.stdout.decode(errors="replace")
        protocol = {"-tls1": "TLSv1", "-tls1_1": "TLSv1.1"}[version]
        assert re.search(rf"Protocol\s*:\s*{re.escape(protocol)}\n", text), text
        assert "Cipher is (NONE)" not in text
    finally:
        terminate(control)
        control.stdin.close()  # type: ignore[union-attr]
        control.stdout.close()  # type: ignore[union-attr]


def test_tls_1_2_and_1_3_accepted(tlsServer: Server):
    for version, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        result = sClient(tlsServer.files_port, version, "-ign_eof", data=b"QUIT\r\n")
        text = result.stdout.decode(errors="replace")
        assert f"New, {name}, Cipher is" in text, text
        assert "#Server Ready." in text


@pytest.mark.parametrize("version, name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_a_second_connection_resumes_the_session(tlsServer: Server, tmp_path: Path, version: str, name: str):
    """
    A real client saves its session (TLS 1.2: the session ID; 1.3: a ticket
    the server sent after the handshake, read before QUIT's answer) and
    offers it on the next connection: the server resumes it, no full
    handshake.  With Twisted's ssl: defaults both said "New".
    """
    saved = tmp_path / "session.pem"
    first = sClient(tlsServer.files_port, version, "-ign_eof", "-sess_out", str(saved), data=b"QUIT\r\n")
    text = first.stdout.decode(errors="replace")
    assert f"New, {name}, Cipher is" in text and "#Bye." in text, text
    assert saved.stat().st_size > 0
    second = sClient(tlsServer.files_port, version, "-ign_eof", "-sess_in", str(saved), data=b"QUIT\r\n")
    text = second.stdout.decode(errors="replace")
    assert f"Reused, {name}, Cipher is" in text, text
    assert "#Server Ready." in text and "#Bye." in text


def tlsEndpoint(server: Server, certificate: Certificate | None) -> str:
    description = f"tls:host=127.0.0.1:port={server.files_port}"
    if certificate is not None:
        description += f":trustRoots={certificate.trustRoots}"
    return description


def test_client_gets_a_multi_megabyte_file_byte_exact(tlsServer: Server, certificate: Certificate, root: Path,
                                                      tmp_path: Path):
    """
    FILE over TLS takes the chunked path: had the sendfile fast path written
    the file's plain bytes into the socket under the TLS layer, the client's
    TLS would fail on them; instead every byte arrives, and the size matches.
    """
    result = runClient("--connect", tlsEndpoint(tlsServer, certificate), "-q", "get", BIG_NAME, "notes.txt",
                       "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode().splitlines() == [f"{BIG_NAME} has been saved.", "notes.txt has been saved."]
    assert (tmp_path / BIG_NAME).read_bytes() == (root / BIG_NAME).read_bytes()
    tlsServer.waitLog(rf"files: 127\.0\.0\.1:\d+ \(guest\) sent \S*{re.escape(BIG_NAME)} \({BIG_SIZE} bytes\)")


def test_client_refuses_an_untrusted_certificate(tlsServer: Server, tmp_path: Path):
    """Certificates are checked by default: a self-signed one not in trustRoots fails, exit status 2."""
    result = runClient("--connect", tlsEndpoint(tlsServer, None), "get", "notes.txt", "-o", str(tmp_path))
    assert result.returncode == 2
    error = result.stderr.decode().strip()
    assert error.startswith("echofile-client: ") and len(error.splitlines()) == 1, error
    assert "certificate verify failed" in error, error
    assert list(tmp_path.iterdir()) == []


def test_client_refuses_a_certificate_for_another_name(tlsServer: Server, certificate: Certificate,
                                                       tmp_path: Path):
    other = makeCertificate(tmp_path / "other", name="elsewhere.example")
    description = f"tls:host=localhost:port={tlsServer.files_port}:trustRoots={other.trustRoots}"
    result = runClient("--connect", description, "list")
    assert result.returncode == 2
    assert b"#" not in result.stdout


def test_plaintext_client_on_the_tls_port(tlsServer: Server):
    """A plaintext command is a broken handshake: no cleartext greeting, no command run, connection closed."""
    with socket.create_connection(("127.0.0.1", tlsServer.files_port), timeout=10) as sock:
        sock.sendall(b"AUTH " + PASSWORD.encode() + b"\r\nLIST\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert b"#" not in received  # at most a TLS alert record
    assert b"Server Ready" not in received


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01"], ids=["silent", "half-a-client-hello"])
def test_stalled_handshake_times_out(tlsServer: Server, sent: bytes):
    """A client that starts no handshake, or stops in the middle of it, is cut off at the login deadline."""
    with socket.create_connection(("127.0.0.1", tlsServer.files_port), timeout=LOGIN + 8) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass  # aborted: RST
        elapsed = time.monotonic() - started
    assert LOGIN - 0.5 <= elapsed < LOGIN + 5, elapsed
    tlsServer.waitLog(r"TLS handshake with 127\.0\.0\.1:\d+ not done in 3\.0s \(--login-timeout\), closing")


def test_tls_directory_endpoint(certificate: Certificate, root: Path, tmp_path: Path):
    """
    Twisted's newer ``tls:`` server endpoint: a folder of PEM files (key and
    certificate together), chosen by SNI, also TLS 1.2+.
    """
    pems = tmp_path / "pems"
    pems.mkdir()
    (pems / "localhost.pem").write_bytes(certificate.key.read_bytes() + certificate.cert.read_bytes())
    server = startServer(
        tmp_path / "logs", root,
        "--echo", "tcp:0:interface=127.0.0.1",
        "--files", f"tls:{pems}:port=0:interface=127.0.0.1",
        ready=r"FilesFactory \(TLS\) starting on (\d+)",
    )
    try:
        result = runClient("--connect", f"tls:host=localhost:port={server.files_port}:trustRoots={certificate.trustRoots}",
                           "list")
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert b"notes.txt" in result.stdout
    finally:
        stop(server)
