"""
The file service and a client that half-closes (shuts down its write side)
after its last command, as ``nc -N`` and many scripts do: the commands that
arrived before the FIN are all answered, in order, then the server closes.
"""

from __future__ import annotations

import socket

from e2ehelpers import HELP, Server, nc
from support import PASSWORD


def test_nc_half_close_after_pipelined_commands(plainServer: Server) -> None:
    """
    ``nc -N`` shuts down its write side after the last command: the
    commands it sent are still all answered, in order (no QUIT needed).
    """
    script = f"help\nauth {PASSWORD}\nfile notes.txt\n".encode()
    result = nc(plainServer.files_port, script, "-N")
    assert result.stdout == (
        b"#Server Ready.\r\n" + HELP + b"\r\n" + b"#You are logged in.\r\n"
        + b"#Sending notes.txt (12 bytes).\r\nhello notes\n\r\n#File notes.txt sent successfully.\r\n"
    )


def test_half_close_after_commands_raw(plainServer: Server) -> None:
    """Raw socket: commands, then SHUT_WR; every reply still arrives, then EOF."""
    with plainServer.files() as c:
        c.login()
        c.send(b"HELP\r\nLIST docs\r\nFILE notes.txt\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.rest() == (
            HELP + b"\r\n#1 entries in docs.\r\n9 readme.txt\r\n"
            + b"#Sending notes.txt (12 bytes).\r\nhello notes\n\r\n#File notes.txt sent successfully.\r\n"
        )
