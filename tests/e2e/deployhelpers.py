"""
Helpers of the deployment end-to-end tests (tests/e2e/test_deploy_*.py):
``twistd echofile`` on TLS, PROXY and systemd endpoints, certificates made
on the spot, and the external tools (openssl, haproxy,
systemd-socket-activate) as real peers.

Servers are the same L{e2ehelpers.Server} as the other end-to-end tests and
are stopped (and their logs checked) by L{e2ehelpers.stop}.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from e2ehelpers import PASSWORD, STARTUP_TIMEOUT, Server, start, twistdCommand

#: What CI installs for these tests (README.md and .ci/run).
APT_PACKAGES = "haproxy systemd openssl"


def requireTool(name: str) -> str:
    """The path of a tool these tests drive; a clear failure (never a skip) when it is missing."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        pytest.fail(f"{name!r} is not installed; the deployment tests need it (apt-get install -y {APT_PACKAGES})")
    return found


@dataclass
class Certificate:
    """A self-signed server certificate for 127.0.0.1 and localhost."""

    key: Path
    cert: Path
    #: A folder holding only the certificate: a C{trustRoots=} for clients.
    trustRoots: Path


def makeCertificate(directory: Path, name: str = "localhost") -> Certificate:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath, roots = directory / "key.pem", directory / "cert.pem", directory / "roots"
    keyPath.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    keyPath.chmod(0o600)
    certPath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    roots.mkdir()
    shutil.copy(certPath, roots / "cert.pem")
    return Certificate(keyPath, certPath, roots)


def startServer(
    logDir: Path,
    root: Path,
    *options: str,
    ready: str = r"FilesFactory.*starting on (\d+)",
    prefix: tuple[str, ...] = (),
    password: str | None = PASSWORD,
    env: dict[str, str] | None = None,
    twistdOptions: tuple[str, ...] = (),
) -> Server:
    """
    Run C{[*prefix,] twistd -n --pidfile= echofile --root ROOT *options}
    and wait for the log line C{ready} (its first group, if a number, is
    the files port).  Give every listening option explicitly: nothing is
    added but the root.
    """
    args = twistdCommand("--root", str(root), *options, twistdOptions=twistdOptions, prefix=prefix)
    return start(args, logDir, root, kind=Server, ready={"files_port": ready}, password=password, env=env)


def freePort() -> int:
    """A loopback TCP port free right now (for tools that cannot report the one they got)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitListening(port: int, timeout: float = STARTUP_TIMEOUT, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:C{port}."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listening on 127.0.0.1:{port} after {timeout}s")
            time.sleep(0.05)


def terminate(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a helper process we started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: The global and defaults sections every test's haproxy.cfg starts with (TCP mode, log to stdout).
HAPROXY_HEAD = """\
global
    log stdout format raw local0 info

defaults
    mode tcp
    log global
{extra}    timeout connect 5s
    timeout client 10m
    timeout server 10m
"""


def startHaproxy(config: str, directory: Path) -> tuple[subprocess.Popen, Path]:
    """
    Write C{config} to C{directory}/haproxy.cfg, have haproxy check it, and
    run it in the foreground; returns the process and its log file.
    """
    haproxyPath = requireTool("haproxy")
    path = directory / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run([haproxyPath, "-c", "-f", str(path)], capture_output=True, timeout=20)
    assert check.returncode == 0, check.stdout + check.stderr
    log = directory / "haproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([haproxyPath, "-db", "-f", str(path)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def clientPath() -> str:
    import sys

    candidate = Path(sys.executable).with_name("echofile-client")
    if not candidate.exists():
        pytest.fail("echofile-client not found next to the Python running the tests: pip install -e .")
    return str(candidate)


def runClient(*args: str, password: str = PASSWORD, timeout: float = 30, cwd: Path | None = None):
    env = dict(os.environ, ECHOFILE_PASSWORD=password)
    return subprocess.run(
        [clientPath(), *args], capture_output=True, timeout=timeout, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
    )
