"""
HASH and RESUME through the real ``twistd -n echofile``: the digest comes
from the reactor's thread pool as makeService wires it, and a verified
resume (HASH, RESUME of the rest, check) works over a real socket.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

from e2ehelpers import HELP, Server


def test_verified_resume(startServer: Callable[..., Server]) -> None:
    server = startServer("--hash-jobs", "1", "--hash-cache", "4")
    data = os.urandom(3 * 1024 * 1024 + 5)
    (server.root / "big.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest().encode()
    with server.files() as c:
        c.login()  # reads the greeting too
        assert c.command("HELP") == HELP
        assert c.command("HASH big.bin") == b"#SHA-256 of big.bin (%d bytes): %s." % (len(data), digest)
        assert c.command("HASH big.bin") == b"#SHA-256 of big.bin (%d bytes): %s." % (len(data), digest)
        have = data[:1000000]  # what an interrupted download kept
        assert c.command("RESUME 1000000 big.bin") == b"#Sending big.bin from byte 1000000 (%d bytes)." % (len(data) - 1000000)
        rest = c.exact(len(data) - 1000000)
        assert c.exact(2) == b"\r\n" and c.line() == b"#File big.bin sent successfully."
        assert hashlib.sha256(have + rest).hexdigest().encode() == digest
        assert c.command("RESUME 99999999 big.bin") == b"!Offset 99999999 is past the end of big.bin (%d bytes)." % len(data)
        assert c.command("RESUME +1 big.bin") == b"!Usage: RESUME <offset> <name>"
        assert c.command("HASH ../outside") == b"!File ../outside could not be opened."
        assert c.command("QUIT") == b"#Bye."
    server.waitLog(r"files: 127\.0\.0\.1:\d+ \(guest\) SHA-256 of \S*big\.bin \(3145733 bytes\)", count=2)
