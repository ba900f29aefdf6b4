"""
Confinement against a tree that changes while it is read, on the real
``twistd -n echofile``: a folder inside the root is swapped, thousands of
times a second, with a symlink to a folder outside the root (one atomic
``renameat2(RENAME_EXCHANGE)``), while a client asks for a file in it and
lists it.  Not one byte from outside may come back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import threading
from pathlib import Path
from typing import Iterator

import pytest

from e2ehelpers import Conn, Server, openFds

#: Requests per command (FILE, LIST); the swap runs all the while.
REQUESTS = 3000
#: Pipelined per round trip, to get through thousands of requests quickly.
BATCH = 50

INSIDE = b"inside the root\n"
OUTSIDE = b"OUTSIDE THE ROOT: must never be served\n"
INSIDE_LISTING = [b"0 inside-only.txt", f"{len(INSIDE)} passwd".encode()]
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _renameat2() -> "ctypes._FuncPointer":
    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is None:
        pytest.fail("this libc has no renameat2 (glibc >= 2.28 needed for the swap race)")
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically: no moment where either is missing."""
    if _renameat2()(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


class Swapper:
    """A thread exchanging a real folder and a symlink out of the root, as fast as it can."""

    def __init__(self, real: Path, link: Path) -> None:
        self.real, self.link = real, link
        self.swaps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                exchange(self.real, self.link)
                self.swaps += 1
        except BaseException as e:  # reported by stop()
            self.error = e

    def __enter__(self) -> "Swapper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.swaps % 2:  # leave the tree as it was
            exchange(self.real, self.link)
        if self.error is not None:
            raise self.error


@pytest.fixture
def raceTree(tmp_path: Path) -> Iterator[Path]:
    """
    root/race/d/      a real folder: passwd (inside content)
    root/race/l       -> ../../outside (a folder outside the root)
    outside/          passwd (outside content), outside-only.txt
    """
    root = tmp_path / "root"
    (root / "race" / "d").mkdir(parents=True)
    (root / "race" / "d" / "passwd").write_bytes(INSIDE)
    (root / "race" / "d" / "inside-only.txt").write_bytes(b"")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(OUTSIDE)
    (outside / "outside-only.txt").write_bytes(b"")
    (root / "race" / "l").symlink_to("../../outside")
    exchange(root / "race" / "d", root / "race" / "l")  # the swap works here (else fail now, clearly)
    exchange(root / "race" / "d", root / "race" / "l")
    yield root


def fileRound(conn: Conn, count: int) -> tuple[int, int, int, int]:
    """C{count} pipelined FILE requests: (inside bodies, outside bytes, refusals, other replies)."""
    conn.send(b"FILE race/d/passwd\r\n" * count)
    inside = outside = refused = other = 0
    for _ in range(count):
        header = conn.line()
        if header == b"!File race/d/passwd could not be opened.":
            refused += 1
            continue
        match = re.fullmatch(rb"#Sending race/d/passwd \((\d+) bytes\)\.", header)
        if match is None:
            other += 1
            continue
        body = conn.exact(int(match.group(1)))
        assert conn.exact(2) == b"\r\n"
        assert conn.line() == b"#File race/d/passwd sent successfully."
        if body == INSIDE:
            inside += 1
        else:
            outside += len(body)
    return inside, outside, refused, other


def listRound(conn: Conn, count: int) -> tuple[int, int, int, int]:
    """C{count} pipelined LIST requests: (inside listings, outside listings, refusals, other replies)."""
    conn.send(b"LIST race/d\r\n" * count)
    inside = outside = refused = other = 0
    for _ in range(count):
        header = conn.line()
        if header == b"!Directory race/d could not be opened.":
            refused += 1
            continue
        match = re.fullmatch(rb"#(\d+) entries in race/d\.", header)
        if match is None:
            other += 1
            continue
        if conn.lines(int(match.group(1))) == INSIDE_LISTING:
            inside += 1
        else:  # any other entry or size is what lies outside
            outside += 1
    return inside, outside, refused, other


def fdCount(server: Server) -> int:
    return sum(1 for target in openFds(server.pid).values() if not target.startswith("socket:"))


def test_swapped_folder_never_serves_outside_bytes(startServer, raceTree: Path) -> None:
    """
    FILE and LIST of a folder that is swapped for a symlink out of the root,
    thousands of times over: every answer is the inside content or a refusal.
    """
    server = startServer(root=raceTree)
    race = raceTree / "race"
    with server.files(timeout=30) as conn:
        conn.login()
        assert listRound(conn, 1) == (1, 0, 0, 0)
        before = fdCount(server)
        files = [0, 0, 0, 0]
        listings = [0, 0, 0, 0]
        with Swapper(race / "d", race / "l") as swapper:
            for _ in range(REQUESTS // BATCH):
                files = [a + b for a, b in zip(files, fileRound(conn, BATCH))]
                listings = [a + b for a, b in zip(listings, listRound(conn, BATCH))]
        print(f"\nswap race: {swapper.swaps} swaps; FILE inside/outside bytes/refused/other = {files}; "
              f"LIST inside/outside listings/refused/other = {listings}")
        assert swapper.swaps > REQUESTS  # the race really ran
        assert files[1] == 0, f"{files[1]} bytes from outside the root were served"
        assert listings[1] == 0, f"{listings[1]} listings showed a folder outside the root"
        assert files[3] == 0 and listings[3] == 0, "replies other than the file, the listing or the refusal"
        # Both outcomes occurred: the requests really met the swap in both states.
        assert files[0] > 0 and files[2] > 0
        assert listings[0] > 0 and listings[2] > 0
        assert conn.command("HELP").startswith(b"#Commands:")
        assert fdCount(server) == before, "descriptors leaked during the race"


def test_renameat2_errors_are_reported() -> None:
    """The helper itself fails loudly (not silently) when the swap cannot happen."""
    with pytest.raises(OSError) as raised:
        exchange(Path("/nonexistent-a"), Path("/nonexistent-b"))
    assert raised.value.errno == errno.ENOENT


# -- hidden names: a server started in a checkout ------------------------------------------------


def checkout(base: Path) -> Path:
    """What the README's first command serves: a git checkout with its venv."""
    root = base / "checkout"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_bytes(b"[remote \"origin\"]\n\turl = https://token@example.org/x.git\n")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "pyvenv.cfg").write_bytes(b"home = /usr/bin\n")
    (root / ".env").write_bytes(b"ECHOFILE_PASSWORD=hunter2\n")
    (root / "README.md").write_bytes(b"# readme\n")
    (root / "git-config").symlink_to(".git/config")
    return root


HIDDEN = [".git/config", ".venv/pyvenv.cfg", ".env", "git-config", "/.git/config", "\\.env"]


def test_a_checkout_does_not_serve_its_dotfiles(startServer, tmp_path: Path) -> None:
    server = startServer(root=checkout(tmp_path))
    with server.files() as conn:
        conn.login()
        for name in HIDDEN:
            assert conn.command(f"FILE {name}") == f"!File {name} could not be opened.".encode()
        for name in [".git", ".venv", "git-dir"]:
            assert conn.command(f"LIST {name}") == f"!Directory {name} could not be opened.".encode()
        assert conn.command("LIST") == b"#1 entries in /."
        assert conn.line() == b"9 README.md"


def test_dotfiles_option_serves_them(startServer, tmp_path: Path) -> None:
    root = checkout(tmp_path)
    server = startServer("--dotfiles", root=root)
    with server.files() as conn:
        conn.login()
        header = conn.command("FILE git-config")
        size = (root / ".git" / "config").stat().st_size
        assert header == f"#Sending git-config ({size} bytes).".encode()
        assert conn.exact(size + 2) == (root / ".git" / "config").read_bytes() + b"\r\n"
        assert conn.line() == b"#File git-config sent successfully."
        assert conn.command("LIST") == b"#5 entries in /."
        assert [line.split(b" ", 1)[1] for line in conn.lines(5)] == [
            b".env", b".git/", b".venv/", b"README.md", b"git-config",
        ]
