"""
systemd socket activation: the server runs under ``systemd-socket-activate``
(Debian package systemd), which binds the sockets, starts twistd on the
first connection and hands the listening sockets down (``LISTEN_FDS``).
The ``systemd:`` endpoints adopt them; the first client, queued in the
backlog while the server started, gets a whole session.
"""

from __future__ import annotations

from pathlib import Path

from deployhelpers import freePort, requireTool, startServer
from e2ehelpers import PASSWORD, Conn, stop
from support import populate


def test_session_through_inherited_sockets(tmp_path: Path):
    (tmp_path / "root").mkdir()
    root = populate(tmp_path / "root")
    filesPort, echoPort = freePort(), freePort()
    server = startServer(
        tmp_path / "logs", root,
        # index= and name= are both supported; Twisted needs LISTEN_FDNAMES (hence --fdname),
        # which systemd itself (227+) always sets.
        "--files", "systemd:domain=INET:index=0",
        "--echo", "systemd:domain=INET:name=echo",
        prefix=(
            requireTool("systemd-socket-activate"),
            "-l", f"127.0.0.1:{filesPort}", "-l", f"127.0.0.1:{echoPort}",
            "--fdname=files:echo", "-E", "ECHOFILE_PASSWORD", "-E", "PYTHONUNBUFFERED",
        ),
        ready=rf"Listening on 127\.0\.0\.1:{echoPort} as 4\.",
    )
    try:
        # Nothing runs twistd yet: this connection starts it.
        with Conn(filesPort, timeout=30) as conn:
            conn.login(PASSWORD)
            assert conn.command("FILE notes.txt") == b"#Sending notes.txt (12 bytes)."
            assert conn.exact(14) == b"hello notes\n\r\n"
            assert conn.line() == b"#File notes.txt sent successfully."
            assert conn.command("QUIT") == b"#Bye."
        server.waitLog(rf"FilesFactory starting on {filesPort}")
        server.waitLog(r"files: 127\.0\.0\.1:\d+ \(guest\) sent \S*notes\.txt \(12 bytes\)")
        with Conn(echoPort) as conn:
            conn.send(b"\x00\xffecho\r\n")
            assert conn.exact(8) == b"\x00\xffecho\r\n"
        assert server.proc.poll() is None  # the same process serves on (exec, not a child per connection)
    finally:
        stop(server)
