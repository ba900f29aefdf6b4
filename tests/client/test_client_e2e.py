"""
End to end: ``twistd -n echofile`` as a subprocess, ``echofile-client`` as
another, as a user would run them.  The server's ports are read from its
log; the progress bar is checked on a real pseudo-terminal.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import socket
import struct
import subprocess
import termios
from pathlib import Path

import pytest
from clienthelpers import ALICE, CLIENT, CONSOLE_SCRIPT, clientEnv, launchServer, sha256
from clienthelpers import runClientProgram as client
from support import populate

BIG = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = populate(tmp_path_factory.mktemp("served"))
    with open(root / "big.bin", "wb") as f:
        for _ in range(BIG // (1024 * 1024)):
            f.write(os.urandom(1024 * 1024))
    (root / "tricky.txt").write_bytes(
        b"#File tricky.txt sent successfully.\r\n\r\n#File tricky.txt sent successfully.\r\n!Bad password.\n"
    )
    (root / "medium.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    return root


@pytest.fixture(scope="module")
def server(root):
    server = launchServer(root)
    try:
        yield server
    finally:
        server.stop()


def test_get_two_files_and_a_missing_one(server, root, tmp_path):
    result = client("--connect", server.files, "get", "notes.txt", "nope.txt", "docs/readme.txt", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.decode().splitlines() == ["notes.txt has been saved.", "docs/readme.txt has been saved."]
    assert result.stderr.decode().splitlines() == ["File nope.txt not found on server"]
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "readme.txt"]
    assert (tmp_path / "readme.txt").read_bytes() == (root / "docs" / "readme.txt").read_bytes()


def test_console_script_and_options_after_names(server, root, tmp_path):
    assert CONSOLE_SCRIPT.exists(), "the echofile-client console script is not installed"
    out = tmp_path / "out"
    result = client(
        "get", "binary.bin", "-o", str(out), "tricky.txt", "--connect", server.files, command=[str(CONSOLE_SCRIPT)]
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert (out / "binary.bin").read_bytes() == (root / "binary.bin").read_bytes()
    assert (out / "tricky.txt").read_bytes() == (root / "tricky.txt").read_bytes()


def test_fifty_megabytes_byte_exact(server, root, tmp_path):
    result = client("--connect", server.files, "get", "big.bin", "-o", str(tmp_path))
    assert (result.returncode, result.stderr) == (0, b"")
    assert (tmp_path / "big.bin").stat().st_size == BIG
    assert sha256(tmp_path / "big.bin") == sha256(root / "big.bin")


def test_wrong_password(server, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("not it\n")
    result = client("--connect", server.files, "--password-file", str(secret), "get", "notes.txt", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == b"echofile-client: login failed: Bad password.\n"
    assert os.listdir(tmp_path) == ["pw"]


def test_named_account(server, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(ALICE + "\n")
    env = clientEnv()
    del env["ECHOFILE_PASSWORD"]
    result = client("--connect", server.files, "--user", "alice", "--password-file", str(secret), "list", "docs", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"9 readme.txt\n", b"")


def test_unreachable_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        result = client("--connect", f"tcp:host=127.0.0.1:port={port}", "get", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.decode() == f"echofile-client: cannot connect to tcp:host=127.0.0.1:port={port}: Connection refused\n"


def test_usage_error_is_one_line(server):
    result = client("get", "--output")
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr


def test_list(server):
    result = client("--connect", server.files, "list")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert f"{BIG} big.bin" in lines and "- docs/" in lines and "12 notes.txt" in lines
    result = client("--connect", server.files, "list", "docs/nothing")
    assert (result.returncode, result.stderr) == (1, b"Directory docs/nothing could not be opened.\n")


def test_echo_text_and_stdin(server):
    result = client("--connect", server.echo, "echo", "hello", "world")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hello world\n", b"")
    data = bytes(range(256)) * 4096 + b"no newline at the end"
    env = clientEnv()
    del env["ECHOFILE_PASSWORD"]  # echo needs none
    result = client("--connect", server.echo, "echo", input=data, env=env)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == data


def runOnPty(argv: list[str], cwd: Path) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal (100 columns); returns status, stdout, what the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen(
        [*CLIENT, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=clientEnv(), cwd=cwd
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as e:  # EIO: every writer of the terminal has closed it
            assert e.errno == errno.EIO
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    stdout = process.stdout.read()
    process.stdout.close()
    return process.wait(timeout=60), stdout, shown


def test_progress_bar_on_a_terminal(server, tmp_path):
    status, stdout, shown = runOnPty(["--connect", server.files, "get", "medium.bin", "notes.txt"], tmp_path)
    assert status == 0
    assert stdout == b"medium.bin has been saved.\nnotes.txt has been saved.\n"
    text = shown.decode("utf-8", "replace")
    assert "medium.bin" in text and "notes.txt" in text
    assert "━" in text  # the bar
    assert "2.1/2.1 MB" in text  # size
    assert "/s" in text  # rate


def test_no_progress_when_quiet_or_piped(server, tmp_path):
    status, stdout, shown = runOnPty(["--connect", server.files, "--quiet", "get", "medium.bin"], tmp_path)
    assert (status, stdout, shown) == (0, b"medium.bin has been saved.\n", b"")
    (tmp_path / "medium.bin").unlink()
    result = client("--connect", server.files, "get", "medium.bin", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, b"")
