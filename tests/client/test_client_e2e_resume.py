"""
End to end, issue 12: a real ``echofile-client get`` against ``twistd -n
echofile`` through a small loopback proxy that forwards slowly (small chunks),
counts what it forwards to the client, and can cut the connection after N
bytes, stall, or flip one byte.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from clienthelpers import CLIENT, Twistd, clientEnv, launchServer, names, sha256
from clienthelpers import runClientProgram as client

from echofile.client.verified import partPaths, readRecord

SIZE = 4 * 1024 * 1024
CUT = 1_500_000
#: What crosses besides the body: greeting, login, HASH and RESUME replies, trailer, goodbye.
OVERHEAD = 1024


class Proxy:
    """
    Forwards one loopback port to another, in small chunks with a pause
    between them.  Counts the bytes sent to the client (C{toClient}); after
    C{cutAfter} of them closes both sides, or with C{stall} stops forwarding
    but stays connected; C{flipAt} inverts that byte of the stream.
    """

    CHUNK = 16 * 1024

    def __init__(self, upstream: int, cutAfter: int | None = None, stall: bool = False, flipAt: int | None = None):
        self._upstream = upstream
        self._cutAfter = cutAfter
        self._stall = stall
        self._flipAt = flipAt
        self.toClient = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    @property
    def endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self._listener.getsockname()[1]}"

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [downstream, upstream]
            self._spawn(self._pump, downstream, upstream, False)
            self._spawn(self._pump, upstream, downstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, toClient: bool) -> None:
        try:
            while not self._stop.is_set():
                data = source.recv(self.CHUNK)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                if toClient:
                    data = self._filter(data)
                    if data is None:
                        return
                sink.sendall(data)
                time.sleep(0.001)  # forward slowly: the transfer takes many reads on the client
        except OSError:
            return

    def _filter(self, data: bytes) -> bytes | None:
        start = self.toClient
        if self._flipAt is not None and start <= self._flipAt < start + len(data):
            i = self._flipAt - start
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        if self._cutAfter is not None and start + len(data) >= self._cutAfter:
            data = data[: self._cutAfter - start]
            self.toClient += len(data)
            self._end(data)
            return None
        self.toClient += len(data)
        return data

    def _end(self, last: bytes) -> None:
        downstream, upstream = self._sockets[-2], self._sockets[-1]
        downstream.sendall(last)
        if self._stall:
            self._stop.wait()  # connected, silent
            return
        for s in (downstream, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not on Linux)
        except OSError:
            pass
        self._listener.close()
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for thread in self._threads:
            thread.join(timeout=20)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    (root / "big.bin").write_bytes(os.urandom(SIZE))
    return root


@pytest.fixture(scope="module")
def server(root):
    server = launchServer(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxies():
    made: list[Proxy] = []

    def make(server: Twistd, **kwargs) -> Proxy:
        proxy = Proxy(int(server.files.rsplit("=", 1)[1]), **kwargs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def test_a_cut_download_is_completed_by_continue_with_only_the_rest(server, root, tmp_path, proxies):
    cutting = proxies(server, cutAfter=CUT)
    first = client("--connect", cutting.endpoint, "get", "--continue", "big.bin", cwd=tmp_path)
    assert first.returncode == 2, first.stderr
    assert b"the part is kept in" in first.stderr
    part, record = partPaths(tmp_path / "big.bin")
    assert names(tmp_path) == [part.name, record.name]
    kept = part.stat().st_size
    assert CUT - OVERHEAD < kept < CUT
    assert readRecord(record) == (sha256(root / "big.bin"), SIZE)

    counting = proxies(server)
    second = client("--connect", counting.endpoint, "get", "--continue", "big.bin", cwd=tmp_path)
    assert (second.returncode, second.stdout, second.stderr) == (0, b"big.bin has been saved.\n", b"")
    assert SIZE - kept <= counting.toClient < SIZE - kept + OVERHEAD  # only the rest crossed
    assert sha256(tmp_path / "big.bin") == sha256(root / "big.bin")
    assert names(tmp_path) == ["big.bin"]


def test_without_continue_a_cut_download_leaves_nothing(server, tmp_path, proxies):
    cutting = proxies(server, cutAfter=CUT)
    result = client("--connect", cutting.endpoint, "get", "big.bin", cwd=tmp_path)
    assert result.returncode == 2 and b"kept" not in result.stderr
    assert names(tmp_path) == []


def test_a_flipped_byte_fails_the_check_and_leaves_nothing(server, root, tmp_path, proxies):
    flipping = proxies(server, flipAt=CUT)
    result = client("--connect", flipping.endpoint, "get", "big.bin", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(b"big.bin: not saved: SHA-256 mismatch: the server announced " + sha256(root / "big.bin").encode())
    assert result.stdout == b""
    assert names(tmp_path) == []


def test_ctrl_c_keeps_the_part_for_continue(server, root, tmp_path, proxies):
    stalling = proxies(server, cutAfter=CUT, stall=True)
    process = subprocess.Popen(
        [*CLIENT, "--connect", stalling.endpoint, "get", "--continue", "big.bin"], cwd=tmp_path,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clientEnv(),
    )
    part, record = partPaths(tmp_path / "big.bin")
    try:
        deadline = time.monotonic() + 60
        while stalling.toClient < CUT or not part.exists() or part.stat().st_size < CUT - OVERHEAD:
            assert time.monotonic() < deadline and process.poll() is None  # a hang guard, not a measurement
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, stdout, stderr) == (130, b"", b"echofile-client: interrupted\n")
    assert names(tmp_path) == [part.name, record.name]
    kept = part.stat().st_size
    counting = proxies(server)
    second = client("--connect", counting.endpoint, "get", "-c", "big.bin", cwd=tmp_path)
    assert (second.returncode, second.stderr) == (0, b"")
    assert SIZE - kept <= counting.toClient < SIZE - kept + OVERHEAD
    assert sha256(tmp_path / "big.bin") == sha256(root / "big.bin")
    assert names(tmp_path) == ["big.bin"]
