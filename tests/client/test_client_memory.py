"""
Client memory against flooding servers (issue #14, item 2): the real
program as a subprocess, its standard output a pipe nobody reads, a fake
server on loopback pushing chat events (or listing lines) as fast as it can.
The client must stop reading from the server instead of buffering.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

from clienthelpers import CLIENT, clientEnv

MB = 1024 * 1024
#: What the flood would cost without backpressure: far above the bound below.
FLOOD = 300 * MB
#: How much the client may grow meanwhile (buffers, the interpreter warming up).
MEMORY_SLACK_KB = 64 * 1024


def rssKB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Flooder:
    """Greets, logs anyone in, then sends C{chunk}s until C{FLOOD} bytes went out or the client stops reading."""

    def __init__(self, start: bytes, chunk: bytes, trigger: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.loggedIn = threading.Event()
        self.blocked = threading.Event()
        self.finished = threading.Event()
        self._start, self._chunk, self._trigger = start, chunk, trigger
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(b"#Server Ready.\r\n")
            seen = b""
            while self._trigger not in seen:
                data = conn.recv(4096)
                if not data:
                    return
                if b"AUTH" in data and b"AUTH" not in seen:
                    conn.sendall(b"#You are logged in.\r\n")
                    self.loggedIn.set()
                seen += data
            conn.sendall(self._start)
            conn.settimeout(3)  # a send that cannot go on for this long: the client stopped reading
            try:
                while self.sent < FLOOD:
                    conn.sendall(self._chunk)
                    self.sent += len(self._chunk)
            except (socket.timeout, TimeoutError):
                self.blocked.set()
            except OSError:
                pass
            self.finished.set()

    def close(self) -> None:
        self.listener.close()


def test_chat_flood_with_unread_stdout_keeps_memory_bounded():
    flooder = Flooder(b"", b"*mallory: " + b"spam " * 200 + b"\r\n", b"AUTH")
    read, write = os.pipe()  # chat input that never ends and never types
    process = subprocess.Popen(
        [*CLIENT, "--connect", f"tcp:host=127.0.0.1:port={flooder.port}", "--timeout", "600", "chat"],
        stdin=read, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=clientEnv(),
    )
    try:
        assert flooder.loggedIn.wait(60)
        before = rssKB(process.pid)
        assert flooder.finished.wait(120)
        after = rssKB(process.pid)
        print(f"client VmRSS {before} kB -> {after} kB; server sent {flooder.sent // MB} MB, blocked={flooder.blocked.is_set()}")
        assert flooder.blocked.is_set(), f"the client read all {flooder.sent} bytes with nobody reading its output"
        assert after - before < MEMORY_SLACK_KB
        assert process.poll() is None  # still chatting, just paced
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        os.close(read)
        os.close(write)
        flooder.close()
