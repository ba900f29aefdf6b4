"""
Hostile input against the real ``twistd -n echofile``: path traversal,
special files, over-long and malformed lines, telnet IAC, odd packet
boundaries, files changing under a transfer, peers that never read or reset
the connection, connection caps, idle peers and password guessing.
"""

from __future__ import annotations

import os
import random
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from echofile.text import sanitize
from e2ehelpers import HELP, BIG_NAME, BIG_SIZE, SECRET, Conn, Server, fetch, openFds, procStatus, waitFor
from support import PASSWORD

MB = 1024 * 1024
#: How much the server's memory may grow while one peer misbehaves.  Without
#: backpressure these tests make it grow by ~200 MB.
MEMORY_SLACK_KB = 64 * 1024


def printable(name: str) -> str:
    return sanitize(name)


def notOpened(name: str) -> bytes:
    return f"!File {printable(name)} could not be opened.".encode()


def sendAll(conn: Conn, data: bytes) -> threading.Thread:
    """Send in the background, ignoring a server that hangs up meanwhile."""

    def run() -> None:
        try:
            conn.sock.sendall(data)
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def patterned(size: int) -> bytes:
    """Content where every offset is recognisable (a truncated copy is a prefix)."""
    block = b"".join(i.to_bytes(4, "big") for i in range(16384))  # 64 KiB, no repeats within
    return (block * (size // len(block) + 1))[:size]


def fdsTo(pid: int, path: Path) -> list[str]:
    """The descriptors of C{pid} open on C{path}."""
    target = str(path.resolve())
    return [fd for fd, where in openFds(pid).items() if where == target]


# -- path confinement -----------------------------------------------------------------


TRAVERSALS = [
    "..",
    "../",
    "../root-other/secret",
    "./../root-other/secret",
    "docs/../../root-other/secret",
    "/../root-other/secret",
    "//..//root-other//secret",
    "..\\root-other\\secret",
    "\\..\\root-other\\secret",
    "docs\\..\\..\\root-other\\secret",
    "docs/..\\../root-other/secret",
    "../../../../../../../../etc/passwd",
    "/etc/passwd",
    "\\etc\\passwd",
    "root-other/secret",
    "%2e%2e/root-other/secret",
    "...",
    "link-out",
    "link-out-abs",
    "link-out-dir/secret",
    "link-out-dir",
    "link-etc",
    "dangling",
    "loop",
    "loop/x",
    "docs",
    "link-in-dir",
    "/",
    "\\",
    ".",
    "notes.txt/..",
    "notes.txt/x",
    "x" * 300,
    "a/" * 2000,
    "notes.txt\x00",
    "\x00",
    "notes.txt\x00.jpg",
    "\x00/../root-other/secret",
]


@pytest.mark.parametrize("name", TRAVERSALS, ids=lambda n: repr(n[:40]))
def test_file_outside_or_not_a_file(server: Server, name: str) -> None:
    """Every way out of the root, and everything that is not a regular file: one answer."""
    with server.files() as c:
        c.login()
        assert c.command(b"FILE " + name.encode()) == notOpened(name)
        assert c.command("HELP") == HELP  # the session goes on


def test_absolute_paths_of_real_files(server: Server) -> None:
    """An absolute path is relative to the root: the real path of a file outside is not served."""
    secret = server.root.parent / "root-other" / "secret"
    inside = server.root / "notes.txt"
    with server.files() as c:
        c.login()
        for name in (str(secret), str(inside), str(server.root), str(secret).replace("/", "\\")):
            assert c.command(f"FILE {name}") == notOpened(name)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("link-in", "notes.txt"),
        ("link-in-dir/readme.txt", "docs/readme.txt"),
        ("docs/../notes.txt", "notes.txt"),
        ("/notes.txt", "notes.txt"),
        ("\\docs\\readme.txt", "docs/readme.txt"),
        ("./docs//readme.txt", "docs/readme.txt"),
    ],
)
def test_names_that_stay_inside_are_served(server: Server, name: str, source: str) -> None:
    with server.files() as c:
        c.login()
        assert fetch(c, name) == (server.root / source).read_bytes()


def test_secret_never_leaks(server: Server) -> None:
    """Every traversal in one session, then check the secret never crossed the wire."""
    with server.files() as c:
        c.login()
        for name in TRAVERSALS:
            c.send(b"FILE " + name.encode() + b"\r\n")
        c.send(b"QUIT\r\n")
        received = c.rest()
    assert SECRET not in received
    assert b"root:" not in received  # /etc/passwd
    assert received.count(b"could not be opened.") == len(TRAVERSALS)
    assert received.endswith(b"#Bye.\r\n")


@pytest.mark.parametrize("name", ["..", "../root-other", "link-out-dir", "/etc", "..\\root-other", "fifo", "notes.txt",
                                  "dangling", "loop", "x\x00"])
def test_list_outside_or_not_a_folder(server: Server, name: str) -> None:
    with server.files() as c:
        c.login()
        assert c.command(b"LIST " + name.encode()) == f"!Directory {printable(name)} could not be opened.".encode()


def test_list_of_a_linked_folder_inside(server: Server) -> None:
    with server.files() as c:
        c.login()
        assert c.command("LIST link-in-dir") == b"#1 entries in link-in-dir."
        assert c.line() == b"9 readme.txt"


def test_fifo_answers_promptly(server: Server) -> None:
    """A FIFO nobody writes to: FILE answers the error at once (the reactor is not blocked), no fd kept."""
    fifo = server.root / "fifo"
    with server.files(timeout=5) as c, server.files(timeout=5) as other:
        c.login()
        other.login()
        assert c.command("FILE fifo") == notOpened("fifo")
        assert other.command("HELP") == HELP
        assert c.command("FILE link-in") == b"#Sending link-in (12 bytes)."
    assert fdsTo(server.pid, fifo) == []


def test_file_replaced_by_a_symlink_out_is_refused(server: Server) -> None:
    """The check is made on each request, on the real path."""
    path = server.root / "swapped.txt"
    path.write_bytes(b"inside\n")
    with server.files() as c:
        c.login()
        assert fetch(c, "swapped.txt") == b"inside\n"
        path.unlink()
        path.symlink_to(server.root.parent / "root-other" / "secret")
        assert c.command("FILE swapped.txt") == notOpened("swapped.txt")


# -- lines ------------------------------------------------------------------------------


def test_line_at_the_limit_is_accepted(server: Server) -> None:
    """4096 bytes before CR LF (or bare LF) is still a line."""
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        assert c.command(b"HELP" + b" " * 4092) == HELP
        c.send(b"HELP" + b" " * 4092 + b"\n")
        assert c.line() == HELP


def test_line_one_over_the_limit(server: Server) -> None:
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        c.send(b"HELP" + b" " * 4093 + b"\r\nHELP\r\n")
        assert c.rest() == b"!Line too long.\r\n"


@pytest.mark.parametrize("prefix", [4093, 4094, 4096, 4097, 8192, MB])
def test_tail_of_a_long_line_never_runs(server: Server, prefix: int) -> None:
    """Whatever the cut, the command at the end of a too-long line is not run."""
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        line = b"A" * prefix + b"HELP"
        writer = sendAll(c, line + b"\r\nHELP\r\nQUIT\r\n")
        received = c.rest()
        writer.join(10)
        assert received == b"!Line too long.\r\n"


def test_megabyte_line_without_newline(server: Server) -> None:
    """A 1 MB line that never ends: the server does not wait for its end to refuse it."""
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        writer = sendAll(c, b"B" * MB)
        assert c.rest() == b"!Line too long.\r\n"
        writer.join(10)
    server.waitLog(r"files: 127\.0\.0\.1:\d+ closed \(line too long\)")


def test_long_line_after_login(server: Server) -> None:
    with server.files() as c:
        c.login()
        writer = sendAll(c, b"FILE " + b"n" * MB + b"\r\nFILE notes.txt\r\n")
        assert c.rest() == b"!Line too long.\r\n"
        writer.join(10)


def test_binary_garbage(server: Server) -> None:
    """Random bytes in short lines: only error replies, then the session still works."""
    rng = random.Random(2024)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b"") for _ in range(300)]
    garbage = b"\n".join(lines)
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        # Garbage, then whatever closes a pending telnet sequence, then a fresh line.
        c.send(garbage + b"\xff\xf0\n\xff\xf0\r\nHELP\r\n")
        replies = []
        while True:
            reply = c.line()
            if reply == HELP:
                break
            replies.append(reply)
        assert replies, "no line of garbage got an answer"
        allowed = {b"!Invalid command.", b"!You are not logged in."}
        assert set(replies) <= allowed, set(replies) - allowed
        assert c.command(f"AUTH {PASSWORD}") == b"#You are logged in."
        assert fetch(c, "notes.txt") == b"hello notes\n"


def test_binary_garbage_to_echo_comes_back(server: Server) -> None:
    data = random.Random(99).randbytes(MB)
    with server.echo() as c:
        writer = sendAll(c, data)
        assert c.exact(len(data)) == data
        writer.join(10)


def test_telnet_iac_sequences_are_removed(server: Server) -> None:
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        assert c.command(b"\xff\xfb\x18HE\xff\xfd\x01LP") == HELP  # WILL TTYPE, DO ECHO
        assert c.command(b"HE\xff\xf4LP") == HELP  # IAC IP (interrupt)
        assert c.command(b"HELP\xff\xfa\x18\x00VT100\xff\xf0") == HELP  # subnegotiation
        assert c.command(b"\xff\xfa\x18\x01\n\nQUIT\n\xff\xf0HELP") == HELP  # nothing inside SB is a command
        assert c.command(b"AUTH corr\xff\xf1ect horse") == b"#You are logged in."  # IAC NOP
        assert c.command(b"FILE \xff\xffx") == b"!Invalid command."  # IAC IAC is a literal 0xFF
        assert c.command(b"FILE not\xff\xfe\x01es.txt") == b"#Sending notes.txt (12 bytes)."
        assert c.exact(14) == b"hello notes\n\r\n"
        assert c.line() == b"#File notes.txt sent successfully."


def test_telnet_iac_split_across_packets(server: Server) -> None:
    with server.files() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert c.line() == b"#Server Ready."
        for piece in (b"HE", b"\xff", b"\xfb", b"\x18", b"L", b"\xff\xfa", b"\x18\x00", b"x\xff", b"\xf0P\r", b"\n"):
            c.send(piece)
            time.sleep(0.005)
        assert c.line() == HELP


def test_endless_subnegotiation_costs_nothing(server: Server) -> None:
    """An IAC SB that never ends is discarded as it arrives: no line limit, no memory."""
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        c.send(b"\xff\xfa\x18" + b"y" * (2 * MB) + b"\xff\xf0HELP\r\n")
        assert c.line() == HELP


def test_several_commands_in_one_packet(server: Server) -> None:
    big = server.root / "pipelined.bin"
    content = patterned(4 * MB)
    big.write_bytes(content)
    packet = (
        b"HELP\r\nUSER alice\r\nAUTH not it\r\nUSER guest\r\nAUTH " + PASSWORD.encode() + b"\r\n"
        b"FILE pipelined.bin\r\nHELP\r\nFILE notes.txt\r\nLIST docs\r\nQUIT\r\nHELP\r\n"
    )
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        c.send(packet)
        assert c.lines(5) == [
            HELP, b"#User alice accepted, send AUTH.", b"!Bad password.", b"#User guest accepted, send AUTH.",
            b"#You are logged in.",
        ]
        assert c.line() == b"#Sending pipelined.bin (4194304 bytes)."
        assert c.exact(len(content)) == content
        assert c.exact(2) == b"\r\n"
        assert c.line() == b"#File pipelined.bin sent successfully."
        assert c.line() == HELP
        assert c.lines(3) == [b"#Sending notes.txt (12 bytes).", b"hello notes\n", b"#File notes.txt sent successfully."]
        assert c.lines(2) == [b"#1 entries in docs.", b"9 readme.txt"]
        assert c.line() == b"#Bye."
        assert c.rest() == b""  # nothing after QUIT ran


def test_one_command_split_byte_by_byte(server: Server) -> None:
    script = f"AUTH {PASSWORD}\r\nFILE notes.txt\r\nHELP\r\n".encode()
    with server.files() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert c.line() == b"#Server Ready."
        for i in range(len(script)):
            c.send(script[i:i + 1])
            time.sleep(0.003)  # one segment each (not a timing assertion)
        assert c.lines(5) == [
            b"#You are logged in.", b"#Sending notes.txt (12 bytes).", b"hello notes\n",
            b"#File notes.txt sent successfully.", HELP,
        ]


def test_partial_line_is_not_run(server: Server) -> None:
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        c.send(b"HELP")
        ready, _, _ = select.select([c.sock], [], [], 0.3)
        assert not ready, "a reply came before the line was complete"
        c.send(b"\r\n")
        assert c.line() == HELP


# -- transfers under stress -------------------------------------------------------------


def tcpQueues(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int]:
    """(send queue, receive queue) in bytes of the IPv4 TCP socket C{local} <-> C{remote}."""

    def hexAddress(address: tuple[str, int]) -> str:
        return socket.inet_aton(address[0])[::-1].hex().upper() + f":{address[1]:04X}"

    wanted = (hexAddress(local), hexAddress(remote))
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if (fields[1], fields[2]) == wanted:
            tx, rx = fields[4].split(":")
            return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no TCP socket {local} <-> {remote}")


def waitUntilStalled(conn: Conn, serverPort: int, quiet: float) -> int:
    """
    Wait until nothing moves towards a client that does not read: the
    server's send queue and the client's receive queue hold still for
    C{quiet} seconds.  Returns the bytes in flight (both queues).
    """
    client = conn.sock.getsockname()
    server = ("127.0.0.1", serverPort)

    def inFlight() -> tuple[int, int]:
        serverSend, _ = tcpQueues(server, client)
        _, clientReceive = tcpQueues(client, server)
        return serverSend, clientReceive

    last, since = inFlight(), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = inFlight()
        if now != last:
            last, since = now, time.monotonic()
    return sum(last)


def test_file_truncated_during_transfer(server: Server) -> None:
    """
    The file shrinks mid-body: the server sends what it had read, notices the
    early end, and closes without the success trailer; the body is short.
    """
    path = server.root / "shrinking.bin"
    size = 32 * MB
    content = patterned(size)
    path.write_bytes(content)
    with server.files(rcvbuf=32 * 1024) as c:
        c.login()
        assert c.command("FILE shrinking.bin") == f"#Sending shrinking.bin ({size} bytes).".encode()
        head = c.exact(256 * 1024)
        assert head == content[: len(head)]
        # Truncate behind the point the server has reached, while it waits for us to read.
        waitUntilStalled(c, server.files_port, 0.3)
        os.truncate(path, len(head))
        rest = c.rest()
    # What was already queued when the file shrank may still come (with sendfile, the
    # kernel sends the pages as they are at that moment: zeros past the new end), but
    # never the whole announced size, and never the success trailer.
    assert len(head) + len(rest) < size
    assert not c.reset
    server.waitLog(r"transfer to 127\.0\.0\.1:\d+ cut short")
    waitFor(lambda: not fdsTo(server.pid, path), 5, "the server to close the truncated file")


def test_file_growing_during_transfer(server: Server) -> None:
    """Exactly the announced size is sent, even if the file grows meanwhile; then the trailer."""
    path = server.root / "growing.bin"
    size = 8 * MB
    content = patterned(size)
    path.write_bytes(content)
    with server.files(rcvbuf=32 * 1024) as c:
        c.login()
        assert c.command("FILE growing.bin") == f"#Sending growing.bin ({size} bytes).".encode()
        head = c.exact(256 * 1024)
        with open(path, "ab") as f:
            f.write(b"\xee" * (4 * MB))
        body = head + c.exact(size - len(head))
        assert c.exact(2) == b"\r\n"
        assert c.line() == b"#File growing.bin sent successfully."
        assert body == content
        assert c.command("HELP") == HELP


def test_pipelined_commands_peer_never_reads(startServer) -> None:
    """
    A peer pipes endless HELPs (each answer ten times the size of the
    question) and never reads: the server stops taking commands once its
    output backs up, so the peer's writes stall and memory stays put.
    """
    server = startServer()
    before = server.rssKB()
    c = server.files(rcvbuf=16 * 1024)
    try:
        c.sock.setblocking(False)
        chunk = b"HELP\r\n" * (MB // 6)
        sent = 0
        while sent < 100 * MB:
            try:
                sent += c.sock.send(chunk)
            except BlockingIOError:
                _, writable, _ = select.select([], [c.sock], [], 1.0)
                if not writable:
                    break
        after = server.rssKB()
        hwm = procStatus(server.pid, "VmHWM")
        print(f"\npipelined HELPs, peer never reads: wrote {sent / MB:.1f} MB before stalling; "
              f"server VmRSS {before} kB -> {after} kB (peak VmHWM {hwm} kB)")
        assert sent < 100 * MB, "the server kept taking commands from a peer that does not read"
        assert after - before < MEMORY_SLACK_KB
        assert hwm - before < MEMORY_SLACK_KB
    finally:
        c.abort()


def test_caps_released_after_resets(startServer) -> None:
    """Connections reset at every stage (before the greeting, over the cap, mid-body) give their slot back."""
    server = startServer("--max-per-ip", "2")

    def admitted(port: int, greeting: bytes) -> bool:
        """Two connections at once are accepted again (both slots free)."""
        conns = []
        try:
            for _ in range(2):
                conns.append(Conn(port))
                if greeting:
                    if conns[-1].line() != greeting:
                        return False
                else:
                    conns[-1].send(b"ping")
                    if conns[-1].exact(4) != b"ping":
                        return False
            return True
        except (EOFError, OSError):
            return False
        finally:
            for conn in conns:
                conn.close()

    def bothFree() -> None:
        waitFor(lambda: admitted(server.files_port, b"#Server Ready."), 5, "both files slots to be free again")
        waitFor(lambda: admitted(server.echo_port, b""), 5, "both echo slots to be free again")

    for _ in range(4):
        server.files().abort()  # maybe before the server even said hello
        server.echo().abort()
        bothFree()
        a, b = server.files(), server.files()
        a.login()
        b.login()
        a.send(f"FILE {BIG_NAME}\r\n".encode())
        assert a.line() == f"#Sending {BIG_NAME} ({BIG_SIZE} bytes).".encode()
        server.files().abort()  # over the cap
        e1, e2, e3 = server.echo(), server.echo(), server.echo()
        e1.send(b"x" * MB)
        for conn in (a, b, e1, e2, e3):
            conn.abort()
        bothFree()


def test_rst_in_the_middle_of_transfers_leaks_nothing(startServer) -> None:
    """Peers that reset mid-body (files) or mid-stream (echo): every descriptor is given back."""
    server = startServer()
    big = server.root / BIG_NAME
    with server.files() as c:  # warm up, so lazy one-off descriptors are counted in the baseline
        c.login()
    server.waitLog(r"files: 127\.0\.0\.1:\d+ closed \(")
    before = server.fds()
    for _ in range(5):
        c = server.files(rcvbuf=32 * 1024)
        c.login()
        c.send(f"FILE {BIG_NAME}\r\n".encode())
        assert c.line() == f"#Sending {BIG_NAME} ({BIG_SIZE} bytes).".encode()
        c.exact(128 * 1024)
        c.abort()
        e = server.echo(rcvbuf=32 * 1024)
        sendAll(e, b"z" * (4 * MB))
        e.exact(64 * 1024)
        e.abort()
    server.waitLog(r"files: 127\.0\.0\.1:\d+ closed \(", count=6)

    def settled() -> bool:
        return server.fds().keys() == before.keys()

    waitFor(settled, 5, f"the server's descriptors to come back to {sorted(before.items())}")
    assert fdsTo(server.pid, big) == []
    with server.files() as c:  # and it still serves
        c.login()
        assert fetch(c, "notes.txt") == b"hello notes\n"


def test_echo_peer_that_never_reads(startServer) -> None:
    """
    A peer writes up to 200 MB to echo and never reads: the server stops
    reading from it, so the peer's writes stall and the server's memory stays put.
    """
    server = startServer()
    before = server.rssKB()
    c = server.echo(rcvbuf=16 * 1024)
    try:
        c.sock.setblocking(False)
        chunk = b"e" * MB
        sent = 0
        while sent < 200 * MB:
            try:
                sent += c.sock.send(chunk)
            except BlockingIOError:
                _, writable, _ = select.select([], [c.sock], [], 1.0)
                if not writable:
                    break  # the server has stopped reading from us
        after = server.rssKB()
        hwm = procStatus(server.pid, "VmHWM")
        print(f"\necho, peer never reads: wrote {sent / MB:.1f} MB before stalling; "
              f"server VmRSS {before} kB -> {after} kB (peak VmHWM {hwm} kB)")
        assert sent < 200 * MB, "the server kept reading from a peer that does not read"
        assert after - before < MEMORY_SLACK_KB
        assert hwm - before < MEMORY_SLACK_KB
    finally:
        c.abort()


def test_file_peer_that_never_reads(startServer) -> None:
    """A peer asks for a 200 MB file and never reads: the server reads the file no faster than it sends."""
    server = startServer()
    big = server.root / BIG_NAME
    before = server.rssKB()
    c = server.files(rcvbuf=16 * 1024)
    try:
        c.login()
        c.send(f"FILE {BIG_NAME}\r\n".encode())
        waitFor(lambda: fdsTo(server.pid, big), 5, "the server to open the file")
        # Wait until the transfer stalls: nothing moves in the socket queues for a second.
        inFlight = waitUntilStalled(c, server.files_port, 1.0)
        after = server.rssKB()
        hwm = procStatus(server.pid, "VmHWM")
        assert inFlight < BIG_SIZE
        print(f"\nFILE, peer never reads: {inFlight / MB:.1f} MB of {BIG_SIZE // MB} MB in the socket queues; "
              f"server VmRSS {before} kB -> {after} kB (peak VmHWM {hwm} kB)")
        assert after - before < MEMORY_SLACK_KB
        assert hwm - before < MEMORY_SLACK_KB
    finally:
        c.abort()
    waitFor(lambda: not fdsTo(server.pid, big), 5, "the server to close the file after the reset")


# -- caps, timeouts, password guessing --------------------------------------------------------


def connectFrom(source: str, port: int) -> Conn:
    conn = Conn.__new__(Conn)
    conn.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.sock.settimeout(5)
    conn.sock.bind((source, 0))
    conn.sock.connect(("127.0.0.1", port))
    conn.buf = b""
    conn.reset = False
    return conn


def test_connection_caps(startServer) -> None:
    """--max-per-ip 2 --max-connections 3: files says busy and closes; echo closes, saying nothing."""
    server = startServer("--max-per-ip", "2", "--max-connections", "3")
    kept: list[Conn] = []
    try:
        # files: two from 127.0.0.1 are welcome, the third is over the per-address cap.
        for _ in range(2):
            kept.append(connectFrom("127.0.0.1", server.files_port))
            assert kept[-1].line() == b"#Server Ready."
        with connectFrom("127.0.0.1", server.files_port) as over:
            assert over.rest() == b"!Server busy, try again later.\r\n"
        # Another address still gets in, up to the total cap.
        kept.append(connectFrom("127.0.0.2", server.files_port))
        assert kept[-1].line() == b"#Server Ready."
        with connectFrom("127.0.0.2", server.files_port) as over:
            assert over.rest() == b"!Server busy, try again later.\r\n"
        # Those still in are served.
        assert kept[0].command("HELP") == HELP

        # echo: the same caps, and over them the connection closes with nothing sent.
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2"):
            kept.append(connectFrom(source, server.echo_port))
            kept[-1].send(b"ping")
            assert kept[-1].exact(4) == b"ping"
        for source in ("127.0.0.1", "127.0.0.2"):
            with connectFrom(source, server.echo_port) as over:
                assert over.rest() == b""

        # A slot is given back when a connection ends.
        kept.pop(0).close()

        def admitted() -> bool:
            with connectFrom("127.0.0.1", server.files_port) as c:
                return c.line() == b"#Server Ready."

        waitFor(admitted, 5, "a files slot to be released")
    finally:
        for c in kept:
            c.close()
    server.waitLog(r"--max-per-ip")
    server.waitLog(r"--max-connections")


def test_idle_timeout(startServer) -> None:
    server = startServer("--idle-timeout", "1")
    with server.files() as idle, server.files() as partial, server.files() as busy, server.echo() as echo:
        idle.login()
        assert partial.line() == b"#Server Ready."
        partial.send(b"HEL")  # an incomplete line is not activity
        echo.send(b"x")
        assert echo.exact(1) == b"x"
        assert busy.line() == b"#Server Ready."
        for _ in range(5):  # commands keep a session alive past the timeout
            assert busy.command("HELP") == HELP
            time.sleep(0.3)
        assert idle.rest() == b"!Idle timeout.\r\n"
        assert partial.rest() == b"!Idle timeout.\r\n"
        assert echo.rest() == b""
        assert busy.command("HELP") == HELP
    server.waitLog(r"files: 127\.0\.0\.1:\d+ closed \(idle timeout\)", count=2)
    server.waitLog(r"echo: 127\.0\.0\.1:\d+ idle, closing")


def test_three_failed_auths_close_the_connection(startServer) -> None:
    """Pipelined guesses wait for each answer; the third gets the boot, the rest is never run."""
    server = startServer()
    with server.files() as c:
        assert c.line() == b"#Server Ready."
        guesses = ["guess-7f3a1", "guess-7f3a2", "guess-7f3a3"]
        c.send("".join(f"AUTH {g}\r\n" for g in guesses).encode() + f"AUTH {PASSWORD}\r\nHELP\r\n".encode())
        assert c.lines(2) == [b"!Bad password.", b"!Bad password."]
        assert c.rest() == b"!Too many failed attempts.\r\n"
    server.waitLog(r"\(3 on this connection\)")
    log = server.logText()
    assert "guess-7f3a" not in log and PASSWORD not in log  # passwords are never logged
    assert "logged in as" not in log  # the right password piped after the third failure never ran
