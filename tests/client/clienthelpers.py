"""Client test helpers: servers on loopback torn down in full, scripted fake servers, the CLI run in-process."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from support import PASSWORD
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from echofile.client import FileClient
from echofile.client.main import Streams, run
from twistdhelpers import Running, start, stop, twistdCommand

ALICE_PASSWORD = "alice's secret"
#: The reply timeout of FileClients made by the fixtures.
TIMEOUT = 10.0


class TrackingFactory(WrappingFactory):
    """Knows its open connections, so teardown can wait for the last one to close (an event, not a poll)."""

    def __init__(self, wrappedFactory: Factory) -> None:
        super().__init__(wrappedFactory)
        self._idleWaiters: list[Deferred[None]] = []

    def unregisterProtocol(self, p) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._idleWaiters = self._idleWaiters, []
            for d in waiters:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idleWaiters.append(d)
        return d


class Listening:
    """A factory listening on an ephemeral loopback port; C{stop} closes every connection first."""

    def __init__(self, factory: Factory) -> None:
        self.tracking = TrackingFactory(factory)
        self.port = None

    @inlineCallbacks
    def start(self):
        self.port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.tracking)
        return self

    @property
    def endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.port.getHost().port}"

    @inlineCallbacks
    def stop(self):
        for wrapper in list(self.tracking.protocols):
            wrapper.transport.abortConnection()
        yield self.tracking.whenIdle()
        yield self.port.stopListening()




#: What a server of protocol revision 1 answers to HASH.
NO_HASH_NOTICE = "note: the server does not know HASH: files are saved without a SHA-256 check"


class Scripted(Protocol):
    """
    A fake server: greets, accepts AUTH, then answers each other line with
    C{script(line, transport)}.  Unless C{knowsHash}, it is a server of
    protocol revision 1: HASH gets ``!Invalid command.`` without reaching the script.
    """

    def __init__(self, script: Callable[[bytes, object], None], knowsHash: bool = False) -> None:
        self._script = script
        self._knowsHash = knowsHash
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(b"#Server Ready.\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line.startswith(b"AUTH "):
                self.transport.write(b"#You are logged in.\r\n")
            elif line.upper().startswith(b"HASH ") and not self._knowsHash:
                self.transport.write(b"!Invalid command.\r\n")
            else:
                self._script(line, self.transport)




@dataclass
class Outcome:
    status: int
    out: str
    err: str


@inlineCallbacks
def runClient(*argv: str, environ: dict[str, str] | None = None):
    """Run the command line in-process, on the test's reactor; fires with an L{Outcome}."""
    streams = Streams(io.StringIO(), io.StringIO(), io.StringIO())
    environ = {"ECHOFILE_PASSWORD": PASSWORD} if environ is None else environ
    status = yield run(reactor, list(argv), streams, environ)
    return Outcome(status, streams.stdout.getvalue(), streams.stderr.getvalue())


def names(folder: Path) -> list[str]:
    """Every name in C{folder}, temporary files included."""
    return sorted(p.name for p in folder.iterdir())


def selfSignedCertificate(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1: (key.pem, cert.pem, a trustRoots folder holding the certificate)."""
    import datetime
    import ipaddress
    import shutil

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath, roots = directory / "key.pem", directory / "cert.pem", directory / "roots"
    keyPath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    certPath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    roots.mkdir()
    shutil.copy(certPath, roots / "cert.pem")
    return keyPath, certPath, roots


# -- driving a FileClient on a StringTransport ----------------------------------


class Results:
    """Collects what a Deferred fired with, so a test can assert on it synchronously."""

    def __init__(self, d) -> None:
        self.value = None
        self.failure: Failure | None = None
        self.fired = False
        d.addCallbacks(self._ok, self._failed)

    def _ok(self, value) -> None:
        self.fired, self.value = True, value

    def _failed(self, failure: Failure) -> None:
        self.fired, self.failure = True, failure

    def error(self, kind):
        assert self.fired and self.failure is not None, self.value
        assert self.failure.check(kind), self.failure
        return self.failure.value


def feed(protocol: FileClient, data: bytes, chunk: int | None = None) -> None:
    """Deliver C{data}, optionally in chunks of C{chunk} bytes (as TCP may)."""
    if chunk is None:
        protocol.dataReceived(data)
        return
    for i in range(0, len(data), chunk):
        protocol.dataReceived(data[i : i + chunk])


def sent(transport: StringTransport) -> bytes:
    data = transport.value()
    transport.clear()
    return data


# -- twistd and echofile-client as subprocesses ---------------------------------

CONSOLE_SCRIPT = Path(sys.executable).with_name("echofile-client")
CLIENT = [sys.executable, "-m", "echofile.client"]
ALICE = "alice s3cret"


@dataclass
class Twistd(Running):
    """A running ``twistd -n echofile`` (L{twistdhelpers.start}), addressed as the client's C{--connect} endpoints."""

    @property
    def files(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.files_port}"

    @property
    def echo(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.echo_port}"

    def stop(self) -> None:
        """SIGTERM; the exit and the log are checked (L{twistdhelpers.stop})."""
        stop(self)


def launchServer(root: Path) -> Twistd:
    """Both services on free loopback ports, serving C{root}, with the account alice (password L{ALICE})."""
    args = twistdCommand(
        "--files", "tcp:0:interface=127.0.0.1", "--echo", "tcp:0:interface=127.0.0.1",
        "--root", str(root), "--auth", f"memory:alice:{ALICE}",
    )
    logs = root.parent / f"{root.name}-logs"  # not in the served root
    return start(args, logs, root, kind=Twistd, password=PASSWORD, cwd=root)


def clientEnv(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ECHOFILE_PASSWORD", "NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS")}
    env.update({"ECHOFILE_PASSWORD": PASSWORD, "TERM": "xterm-256color"}, **extra)
    return env


def runClientProgram(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, input: bytes = b"", command=CLIENT,
) -> subprocess.CompletedProcess:
    """Run echofile-client as a user would, to completion."""
    return subprocess.run(
        [*command, *argv], input=input, capture_output=True, env=env or clientEnv(), cwd=cwd, timeout=120
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
