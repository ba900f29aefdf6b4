"""A redis-server of the test's own: a free loopback port, no persistence, stopped by pid."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

#: Installed by the test command (README, .ci/run).
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawnRedis(port: int, directory: Path | str) -> subprocess.Popen:
    return subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def accepts(port: int, process: subprocess.Popen) -> bool:
    """Does it accept connections yet? (RuntimeError if it died.)"""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        if process.poll() is not None:
            raise RuntimeError("redis-server exited") from None
        return False


def stopRedis(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


@inlineCallbacks
def startRedis(port: int, directory):
    """Fires with the process once it accepts connections."""
    process = spawnRedis(port, directory)
    for _ in range(500):
        if accepts(port, process):
            return process
        yield deferLater(reactor, 0.01, lambda: None)
    process.kill()
    raise RuntimeError("redis-server did not start")


@inlineCallbacks
def until(predicate, what: str):
    for _ in range(1000):  # at most about 10 s: a hang fails instead of blocking the suite
        if predicate():
            return
        yield deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"gave up waiting for {what}")
