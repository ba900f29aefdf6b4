"""
The real server with real tools as peers: ``nc`` (netcat-openbsd) and a
``telnet`` client on a pseudo-terminal; usage errors and packaging as a user
meets them on the command line.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from e2ehelpers import HELP, Server, nc, requireTool, serverEnvironment, twistdPath, waitFor
from support import PASSWORD
from twistdhelpers import runTwistd

#: The HELP reply as it comes on the wire.
HELP_LINE = HELP + b"\r\n"


# -- nc ---------------------------------------------------------------------------


def test_nc_pipelined_session(plainServer: Server) -> None:
    """nc sends bare-LF lines, all at once; replies come in command order."""
    script = f"help\nfile notes.txt\nauth {PASSWORD}\nfile notes.txt\nlist docs\nhelp\nquit\n".encode()
    result = nc(plainServer.files_port, script)
    assert result.returncode == 0, result
    assert result.stdout == (
        b"#Server Ready.\r\n"
        + HELP_LINE
        + b"!You are not logged in.\r\n"
        + b"#You are logged in.\r\n"
        + b"#Sending notes.txt (12 bytes).\r\nhello notes\n\r\n#File notes.txt sent successfully.\r\n"
        + b"#1 entries in docs.\r\n9 readme.txt\r\n"
        + HELP_LINE
        + b"#Bye.\r\n"
    )


def test_nc_pipelined_wrong_password_keeps_order(plainServer: Server) -> None:
    """A failed AUTH is answered late; the commands piped behind it wait for it."""
    script = f"auth nope\nhelp\nauth {PASSWORD}\nfile binary.bin\nquit\n".encode()
    result = nc(plainServer.files_port, script)
    assert result.returncode == 0, result
    body = bytes(range(256)) * 4
    assert result.stdout == (
        b"#Server Ready.\r\n!Bad password.\r\n" + HELP_LINE + b"#You are logged in.\r\n"
        + b"#Sending binary.bin (1024 bytes).\r\n" + body + b"\r\n#File binary.bin sent successfully.\r\n"
        + b"#Bye.\r\n"
    )


def test_nc_echo_binary(plainServer: Server) -> None:
    """``nc -N`` half-closes after stdin: echo sends everything back, then closes."""
    data = bytes(range(256)) * 64 + b"no newline at the end \x00\xff"
    result = nc(plainServer.echo_port, data, "-N")
    assert result.returncode == 0, result
    assert result.stdout == data


# -- telnet on a pty ----------------------------------------------------------------


class Terminal:
    """A program on a pseudo-terminal: type lines, wait for what it shows."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, TERM="dumb", LANG="C.UTF-8")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.screen = b""
        self._seen = 0
        self.status: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the program exited and the pty is closed
            return False
        if not chunk:
            return False
        self.screen += chunk
        return True

    def expect(self, text: bytes, timeout: float = 5.0) -> bytes:
        """Wait until C{text} shows after what was already matched; return the new output up to it."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.screen.find(text, self._seen)
            if at >= 0:
                shown = self.screen[self._seen:at + len(text)]
                self._seen = at + len(text)
                return shown
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 0.5)):
                if self.screen.find(text, self._seen) >= 0:
                    continue
                pytest.fail(f"{text!r} never showed; the terminal so far:\n{self.transcript()}")

    def type(self, line: str) -> None:
        """Type a line and press Enter."""
        os.write(self.fd, line.encode() + b"\r")

    def wait(self, timeout: float = 5.0) -> int:
        """Read the rest of the output until the program exits; its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                while self._read(0):
                    if not select.select([self.fd], [], [], 0)[0]:
                        break
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            self._read(0.1)
        pytest.fail(f"the program did not exit; the terminal so far:\n{self.transcript()}")

    def transcript(self) -> str:
        return self.screen.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


def test_telnet_session(plainServer: Server) -> None:
    """
    A real telnet client on a terminal, through a whole session: greeting,
    a command before login, a wrong password, AUTH, LIST, FILE, QUIT, and
    telnet's own "Connection closed by foreign host.".
    """
    port = plainServer.files_port
    term = Terminal([requireTool("telnet"), "127.0.0.1", str(port)])
    try:
        term.expect(b"Connected to 127.0.0.1.")
        term.expect(b"Escape character is '^]'.")
        term.expect(b"#Server Ready.\r\n")
        term.type("file notes.txt")
        term.expect(b"!You are not logged in.\r\n")
        term.type("auth guess")
        term.expect(b"!Bad password.\r\n")
        term.type(f"auth {PASSWORD}")
        term.expect(b"#You are logged in.\r\n")
        term.type("list")
        term.expect(b"#5 entries in /.\r\n")
        term.expect(b"6 with space.txt\r\n")
        term.type("file notes.txt")
        term.expect(b"#Sending notes.txt (12 bytes).\r\n")
        term.expect(b"hello notes")  # the tty shows the LF of the body as CR LF
        term.expect(b"#File notes.txt sent successfully.\r\n")
        term.type("quit")
        term.expect(b"#Bye.\r\n")
        term.expect(b"Connection closed by foreign host.")
        term.wait()
    finally:
        term.close()
        print("---- telnet transcript ----")
        print(f"$ telnet 127.0.0.1 {port}")
        print(term.transcript())
    shown = term.transcript()
    # The tty echoes what was typed, and every reply is on its own line.
    for line in ("file notes.txt", "!You are not logged in.", "auth guess", "!Bad password.",
                 "#You are logged in.", "#Bye."):
        assert line + "\n" in shown
    plainServer.waitLog(r"files: 127\.0\.0\.1:\d+ closed \(")
    assert "Traceback" not in plainServer.logText()


# -- usage errors ---------------------------------------------------------------------


def _runTwistd(*options: str, cwd: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    return runTwistd(*options, cwd=cwd, password=PASSWORD, timeout=timeout, text=True)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-line", "abc"),
        ("--max-line", "0"),
        ("--idle-timeout", "-1"),
        ("--idle-timeout", "nan"),
        ("--max-connections", "many"),
        ("--max-per-ip", "1.5"),
        ("--root", "/nonexistent"),
        ("--root", "FILE"),  # a file, not a folder
        ("--files", "tcp:xyz"),
        ("--echo", "nosuchtype:1"),
        ("--echo-udp", "abc"),
        ("--echo-udp", "70000"),
    ],
)
def test_usage_error(option: str, value: str, tmp_path: Path) -> None:
    """A bad value exits non-zero with a message naming the option, never a traceback."""
    if value == "FILE":
        value = str(tmp_path / "a-file")
        Path(value).write_text("not a folder")
    loopback = ["--echo", "tcp:0:interface=127.0.0.1", "--files", "tcp:0:interface=127.0.0.1"]
    result = _runTwistd(*loopback, "--root", str(tmp_path), option, value, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert option in output, output
    assert "Traceback" not in output, output
    assert "starting on" not in output, output


def test_usage_error_is_one_line_and_a_pointer_to_help(tmp_path: Path) -> None:
    """Not the whole help text first (what twistd prints for a sub-command by itself)."""
    result = _runTwistd("--max-line", "abc", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout == "", result.stdout
    assert result.stderr.splitlines() == [
        "twistd echofile: Parameter type enforcement failed: --max-line must be a positive number, not 'abc'",
        "Run 'twistd echofile --help' for the options.",
    ]


def test_version_is_logged_at_start(plainServer) -> None:
    from echofile import __version__

    plainServer.waitLog(rf"echofile {re.escape(__version__)} starting \(Twisted ")
    # ... and no "Starting factory <echofile.files.FilesFactory object at 0x...>" noise.
    assert "Starting factory" not in plainServer.logText()
    assert " object at 0x" not in plainServer.logText()


# -- packaging ------------------------------------------------------------------------


def test_twistd_lists_the_plugin_from_outside_the_checkout(tmp_path: Path) -> None:
    """The installed package provides the plugin; the checkout on the cwd is not what makes it work."""
    env = serverEnvironment(PASSWORD)
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [twistdPath(), "--help"], capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+echofile\s+\S", result.stdout, re.MULTILINE), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    options = subprocess.run(
        [twistdPath(), "echofile", "--help"], capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env,
    )
    assert options.returncode == 0, options.stderr
    for option in ("--echo=", "--files=", "--echo-udp=", "--root=", "--auth=", "--idle-timeout=",
                   "--max-line=", "--max-connections=", "--max-per-ip="):
        assert option in options.stdout


def test_the_server_never_serves_its_own_pid_file(startServer, tmp_path: Path) -> None:
    """Started in the folder it serves with a pid file there (the README's command without --pidfile=)."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "notes.txt").write_text("hello\n")
    server = startServer(root=root, cwd=root, twistdOptions=("--pidfile=twistd.pid",))
    waitFor(lambda: (root / "twistd.pid").exists(), 10, "twistd to write its pid file")
    with server.files() as conn:
        conn.login()
        assert conn.command("FILE twistd.pid") == b"!File twistd.pid could not be opened."
        conn.send(b"LIST\r\n")
        assert conn.lines(2) == [b"#1 entries in /.", b"6 notes.txt"]
