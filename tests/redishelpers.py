"""A redis-server of the test's own: a free loopback port, no persistence, stopped by pid."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from support import PASSWORD, connect

#: Installed by the test command (README, .ci/run).
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawnRedis(port: int, directory: Path | str, *extra: str) -> subprocess.Popen:
    """C{extra}: more redis-server options (C{--requirepass}, C{--tls-port} ...)."""
    return subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def tlsOptions(tlsPort: int, directory: Path) -> list[str]:
    """redis-server options for TLS only on C{tlsPort} (plain port 0), with a certificate for 127.0.0.1 made here."""
    key, cert = directory / "redis-key.pem", directory / "redis-cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return ["--tls-port", str(tlsPort), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-auth-clients", "no"]


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
def startRedis(port: int, directory, *extra: str):
    """Fires with the process once it accepts connections (on C{port}: give the TLS port as it, if any)."""
    process = spawnRedis(port, directory, *extra)
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


def lines(transport) -> list[bytes]:
    return transport.value().split(b"\r\n")[:-1]


@inlineCallbacks
def guestOn(factory, port: int):
    protocol, transport = connect(factory, port=port)
    protocol.dataReceived(b"AUTH " + PASSWORD.encode() + b"\r\n")
    yield until(lambda: b"#You are logged in.\r\n" in transport.value(), "the login")
    transport.clear()
    return protocol, transport
