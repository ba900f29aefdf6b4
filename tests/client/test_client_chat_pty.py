"""`echofile-client chat` as people use it: two interactive terminals (ptys) against `twistd -n echofile`."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

import pytest
from support import populate
from clienthelpers import ALICE, CLIENT, clientEnv, launchServer


@pytest.fixture(scope="module")
def chatServer(tmp_path_factory):
    server = launchServer(populate(tmp_path_factory.mktemp("chat")))
    try:
        yield server
    finally:
        server.stop()


class Terminal:
    """A client whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([*CLIENT, *argv], stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.screen = b""

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def waitFor(self, text: str, timeout: float = 20.0) -> None:
        """Read the terminal until C{text} shows (generous deadline: a hung client fails, not a slow one)."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never showed; the terminal has:\n{self.screen.decode(errors='replace')}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:  # EIO: the client exited
                    assert text.encode() in self.screen, self.screen.decode(errors="replace")

    def readSome(self, timeout: float = 1.0) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.screen += os.read(self.master, 4096)
            except OSError:
                pass

    def close(self) -> int:
        try:
            return self.process.wait(timeout=20)
        finally:
            os.close(self.master)


def test_two_people_chat_on_terminals(chatServer, tmp_path):
    passwordFile = tmp_path / "alice.pw"
    passwordFile.write_text(ALICE + "\n")
    alice = Terminal(["--connect", chatServer.files, "--user", "alice", "--password-file", str(passwordFile), "chat"], clientEnv())
    guest = Terminal(["--connect", chatServer.files, "chat"], clientEnv())
    try:
        alice.waitFor("Chatting.")
        guest.waitFor("Chatting.")
        alice.type("hello from alice")
        guest.waitFor("alice: hello from alice")
        guest.type("/msg alice psst")
        alice.waitFor("~guest1 (private): psst")
        alice.type("/who")
        alice.waitFor("2 online: alice, ~guest1")
        alice.type("/quit")
        assert alice.close() == 0
        guest.type("/who")
        guest.waitFor("1 online: ~guest1")
        guest.type("/quit")
        assert guest.close() == 0
    finally:
        for terminal in (alice, guest):
            if terminal.process.poll() is None:
                terminal.process.kill()
                terminal.process.wait()
    assert b"Traceback" not in alice.screen + guest.screen


LEFT, UP = "\x1b[D", "\x1b[A"


def test_line_editing_history_and_a_message_arriving_while_typing(chatServer, tmp_path):
    """On a terminal: arrow keys edit, Up recalls, an incoming line is printed above what is being typed."""
    passwordFile = tmp_path / "alice.pw"
    passwordFile.write_text(ALICE + "\n")
    alice = Terminal(["--connect", chatServer.files, "--user", "alice", "--password-file", str(passwordFile), "chat"], clientEnv())
    guest = Terminal(["--connect", chatServer.files, "chat"], clientEnv())
    try:
        alice.waitFor("Chatting.")
        guest.waitFor("Chatting.")
        guest.type("helo" + LEFT + "l")  # insert the missing l before the o
        alice.waitFor("~guest1: hello\r")  # the server names the guest
        guest.waitFor("guest: hello\r")  # one's own line, under one's chat name
        assert re.search(rb"\[\d\d:\d\d\] guest: hello\r", guest.screen)  # with a timestamp
        guest.type(UP)  # the same line again, from the history
        deadline = time.monotonic() + 20
        while alice.screen.count(b"~guest1: hello\r") < 2:
            assert time.monotonic() < deadline, alice.screen
            alice.readSome()
        os.write(guest.master, b"abc")  # typing, not sent yet
        guest.waitFor("> abc")
        alice.type("ping")
        guest.waitFor("alice: ping\r")
        assert guest.screen.rfind(b"> abc") > guest.screen.rfind(b"alice: ping")  # the input line drawn again below
        guest.type("def")
        alice.waitFor("~guest1: abcdef\r")
        assert b"^[[" not in guest.screen  # arrow keys edit, they are not printed
        guest.type("/quit")
        alice.type("/quit")
        assert guest.close() == 0
        assert alice.close() == 0
    finally:
        for terminal in (alice, guest):
            if terminal.process.poll() is None:
                terminal.process.kill()
                terminal.process.wait()
    assert b"Traceback" not in alice.screen + guest.screen
