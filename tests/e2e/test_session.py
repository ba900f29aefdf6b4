"""
The real ``twistd -n echofile`` driven with raw sockets: every row of
PROTOCOL.md §1, §1b and §2 (chat aside) as a client on the wire sees it.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
from pathlib import Path

from e2ehelpers import ALICE, HELP, Conn, Server, fetch, freeUdpPort
from support import PASSWORD



# -- the file protocol: a whole session -------------------------------------------


def test_whole_session(server: Server) -> None:
    """Greeting, every command before and after login, QUIT, close: the §2 session."""
    root = server.root
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        assert c.command("HELP") == HELP
        assert c.command("FILE notes.txt") == b"!You are not logged in."
        assert c.command("LIST") == b"!You are not logged in."
        assert c.command("NOPE") == b"!Invalid command."
        assert c.command("AUTH") == b"!Usage: AUTH <password>"
        assert c.command("AUTH wrong guess") == b"!Bad password."
        assert c.command(f"AUTH {PASSWORD}") == b"#You are logged in."
        assert c.command(f"AUTH {PASSWORD}") == b"!Already logged in."
        assert c.command("FILE") == b"!Usage: FILE <name>"
        assert fetch(c, "notes.txt") == (root / "notes.txt").read_bytes()
        assert fetch(c, "binary.bin") == (root / "binary.bin").read_bytes()
        assert fetch(c, "empty.bin") == b""
        assert fetch(c, "docs/readme.txt") == b"read me\r\n"
        assert fetch(c, "with space.txt") == b"spaced"
        assert c.command("FILE missing.txt") == b"!File missing.txt could not be opened."
        assert c.command("FILE docs") == b"!File docs could not be opened."
        assert c.command("LIST docs") == b"#1 entries in docs."
        assert c.line() == b"9 readme.txt"
        assert c.command("LIST nowhere") == b"!Directory nowhere could not be opened."
        assert c.command("QUIT") == b"#Bye."
        assert c.rest() == b""
        assert not c.reset


def test_list_root(server: Server) -> None:
    """LIST alone: header `in /.`, entries sorted by name, links resolved, traps left out."""
    with server.files() as c:
        c.login()
        header = c.command("LIST")
        expected = [
            f"{(server.root / 'big-200mb.bin').stat().st_size} big-200mb.bin".encode(),
            b"1024 binary.bin",
            b"- docs/",
            b"0 empty.bin",
            b"12 link-in",
            b"- link-in-dir/",
            b"12 notes.txt",
            b"6 with space.txt",
        ]
        # Other tests in this module may add files to the shared root; read what the header announces.
        match = re.fullmatch(rb"#(\d+) entries in /\.", header)
        assert match, header
        entries = c.lines(int(match.group(1)))
        assert [e for e in entries if e in expected] == expected
        names = [e.split(b" ", 1)[1] for e in entries]
        assert names == sorted(names, key=lambda n: n.rstrip(b"/"))
        for trap in (b"link-out", b"link-out-abs", b"link-out-dir", b"link-etc", b"dangling", b"loop", b"fifo"):
            assert trap not in names and trap + b"/" not in names


def test_case_blanks_and_empty_lines(server: Server) -> None:
    """Commands are case-insensitive, blanks trimmed, empty lines ignored, bare LF accepted."""
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        c.send(b"\r\n\n   \t \r\n  hElP  \t\r\n")
        assert c.line() == HELP
        assert c.command(f"  aUtH   {PASSWORD}  ") == b"#You are logged in."
        c.send(b"File   with space.txt\n")  # bare LF, as nc sends
        assert c.line() == b"#Sending with space.txt (6 bytes)."
        assert c.exact(8) == b"spaced\r\n"
        assert c.line() == b"#File with space.txt sent successfully."
        assert c.command("quit") == b"#Bye."


def test_user_command_and_named_account(server: Server) -> None:
    user, password = ALICE
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        assert c.command("USER") == b"!Usage: USER <name>"
        assert c.command("USER bad/name") == b"!Invalid user name."
        assert c.command("USER " + "x" * 65) == b"!Invalid user name."
        assert c.command("USER nobody") == b"#User nobody accepted, send AUTH."
        assert c.command(f"USER {user}") == f"#User {user} accepted, send AUTH.".encode()
        assert c.command(f"AUTH {password}") == b"#You are logged in."
        assert fetch(c, "notes.txt") == b"hello notes\n"
    server.waitLog(rf"logged in as {user}\b")
    assert password not in server.logText()
    assert PASSWORD not in server.logText()


def test_invalid_utf8_and_control_characters(server: Server) -> None:
    with server.files() as c:
        c.login()
        assert c.command(b"\xc3\x28 HELP") == b"!Invalid command."
        assert c.command(b"FILE caf\xe9") == b"!Invalid command."
        assert c.command(b"FILE a\x01b\x7fc\x1b[31m") == b"!File a?b?c?[31m could not be opened."
        assert c.command("FILE caf\u00e9.txt") == "!File caf\u00e9.txt could not be opened.".encode()
        assert c.command("HELP") == HELP


def test_random_password_is_logged_once_and_works(startServer) -> None:
    """Without ECHOFILE_PASSWORD the server makes a password, logs it once, and it works."""
    server = startServer(password=None)
    match = server.waitLog(r"the password of account 'guest' for this run is (\S+)")[0]
    generated = match.group(1)
    assert len(generated) >= 12
    assert server.logText().count(generated) == 1
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        assert c.command(f"AUTH {PASSWORD}") == b"!Bad password."
        assert c.command(f"AUTH {generated}") == b"#You are logged in."
    assert server.logText().count(generated) == 1


def test_random_password_differs_between_runs(startServer) -> None:
    first = startServer(password=None)
    second = startServer(password=None)
    pattern = r"the password of account 'guest' for this run is (\S+)"
    assert first.waitLog(pattern)[0].group(1) != second.waitLog(pattern)[0].group(1)


# -- echo over TCP ----------------------------------------------------------------


def test_echo_every_byte_value(server: Server) -> None:
    data = bytes(range(256)) * 16 + b"\x00\xff\xff\x00\r\n\r" + "invalid \udcff".encode("utf-8", "surrogatepass")
    with server.echo() as c:
        c.send(data)
        assert c.exact(len(data)) == data


def test_echo_full_duplex(server: Server) -> None:
    """A client that writes 16 MB while it reads gets every byte back, in order."""
    data = random.Random(862).randbytes(16 * 1024 * 1024)
    with server.echo() as c:
        errors: list[BaseException] = []

        def write() -> None:
            try:
                c.send(data)
            except BaseException as e:  # reported below
                errors.append(e)

        writer = threading.Thread(target=write)
        writer.start()
        received = c.exact(len(data))
        writer.join(10)
        assert not errors
        assert received == data


def test_echo_half_close(server: Server) -> None:
    """After the client's FIN, everything sent before it comes back, then EOF."""
    data = random.Random(7).randbytes(3 * 1024 * 1024) + b"\x00\xff"
    with server.echo() as c:
        errors: list[BaseException] = []

        def write() -> None:
            try:
                c.send(data)
                c.sock.shutdown(socket.SHUT_WR)
            except BaseException as e:
                errors.append(e)

        writer = threading.Thread(target=write)
        writer.start()
        received = c.rest()
        writer.join(10)
        assert not errors
        assert not c.reset
        assert len(received) == len(data)
        assert received == data


def test_echo_half_close_with_nothing_sent(server: Server) -> None:
    with server.echo() as c:
        c.sock.shutdown(socket.SHUT_WR)
        assert c.rest() == b""
        assert not c.reset


# -- echo over UDP ----------------------------------------------------------------


def _udpSocketInodes(pid: int) -> set[str]:
    """Inodes of the UDP sockets process C{pid} holds."""
    mine = {
        target[len("socket:["):-1]
        for target in (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        if target.startswith("socket:[")
    }
    udp = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        if os.path.exists(table):
            for row in Path(table).read_text().splitlines()[1:]:
                udp.add(row.split()[9])
    return mine & udp


def test_udp_echo_when_enabled(startServer) -> None:
    port = freeUdpPort()
    server = startServer("--echo-udp", f"127.0.0.1:{port}")
    server.waitLog(rf"starting on {port}\b")
    assert _udpSocketInodes(server.pid)
    datagrams = [b"hello", bytes(range(256)), b"\x00", b"x" * 8000, b""]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for datagram in datagrams:
            s.sendto(datagram, ("127.0.0.1", port))
            reply, source = s.recvfrom(65536)
            assert reply == datagram
            assert source == ("127.0.0.1", port)


def test_udp_echo_off_by_default(server: Server) -> None:
    assert "--echo-udp" not in server.args
    assert not _udpSocketInodes(server.pid), "the server holds a UDP socket without --echo-udp"
    assert "EchoDatagramProtocol" not in server.logText()


# -- several connections at once ----------------------------------------------------


def test_many_sessions_interleaved(server: Server) -> None:
    conns = [server.files() for _ in range(10)]
    try:
        for c in conns:
            c.login()
        for i, c in enumerate(conns):
            c.send(b"FILE binary.bin\r\n" if i % 2 else b"HELP\r\n")
        for i, c in enumerate(conns):
            if i % 2:
                assert c.line() == b"#Sending binary.bin (1024 bytes)."
                assert c.exact(1026) == bytes(range(256)) * 4 + b"\r\n"
                assert c.line() == b"#File binary.bin sent successfully."
            else:
                assert c.line() == HELP
    finally:
        for c in conns:
            c.close()
