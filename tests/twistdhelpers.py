"""
The one way the tests launch the server: ``twistd -n --pidfile= echofile``
(or ``twist``) as a subprocess, its output in a log file, ready once given
log lines appeared, stopped with SIGTERM and (by default) checked for a
clean exit and a log without a traceback.

The end-to-end tests (L{e2ehelpers.launch}, L{deployhelpers.startServer})
and the client's (L{clienthelpers.launchServer}) all start it through
L{start}; the usage-error tests run it to its exit through L{runTwistd}.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import pytest

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
IO_TIMEOUT = 5.0

#: The ports of both services, read from the log of a server started on port 0.
BOTH_PORTS = {"echo_port": r"EchoFactory starting on (\d+)", "files_port": r"FilesFactory starting on (\d+)"}


def programPath(name: str) -> str:
    """A console script of the environment running the tests (the one the package is installed in)."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found next to the Python running the tests nor on PATH: install Twisted")
    return found


def twistdPath() -> str:
    return programPath("twistd")


def twistPath() -> str:
    return programPath("twist")


def twistdCommand(*options: str, twistdOptions: tuple[str, ...] = (), prefix: tuple[str, ...] = ()) -> list[str]:
    """C{[*prefix,] twistd -n --pidfile= [*twistdOptions] echofile *options}: in the foreground, no pid file."""
    return [*prefix, twistdPath(), "-n", "--pidfile=", *twistdOptions, "echofile", *options]


def serverEnvironment(password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ECHOFILE_PASSWORD", None)
    if password is not None:
        env["ECHOFILE_PASSWORD"] = password
    env["PYTHONUNBUFFERED"] = "1"  # the log goes to a file through stdout
    return env


def waitFor(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    """Poll C{predicate} until it is truthy; fail naming C{what} after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Running:
    """A running server process and its log file."""

    proc: subprocess.Popen
    log: Path
    root: Path
    args: list[str]
    password: str | None
    echo_port: int = 0
    files_port: int = 0
    _logHandle: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ports(self) -> tuple[int, int]:
        return self.echo_port, self.files_port

    def logText(self) -> str:
        return self.log.read_text(errors="replace")

    def waitLog(self, pattern: str, timeout: float = IO_TIMEOUT, count: int = 1) -> list[re.Match]:
        """Wait until C{pattern} (a regex) matches at least C{count} times in the log."""
        regex = re.compile(pattern)

        def found() -> list[re.Match] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited ({self.proc.returncode}) while waiting for {pattern!r}:\n{self.logText()}")
            matches = list(regex.finditer(self.logText()))
            return matches if len(matches) >= count else None

        return waitFor(found, timeout, f"log line {pattern!r} (x{count})")  # type: ignore[return-value]


_R = TypeVar("_R", bound=Running)


def start(
    args: list[str],
    logDir: Path,
    root: Path,
    *,
    kind: type[_R] = Running,  # type: ignore[assignment]
    ready: Mapping[str, str] = BOTH_PORTS,
    password: str | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> _R:
    """
    Run C{args} (see L{twistdCommand}) with its output in a new log file in
    C{logDir}, and wait for each of C{ready}'s log lines: C{attribute ->
    regex}; a regex whose first group is a number sets that attribute (a
    port) of the result, a C{kind}.  Stopped again if it does not get ready.
    """
    logDir.mkdir(parents=True, exist_ok=True)
    log = logDir / f"twistd-{time.monotonic_ns()}.log"
    handle = open(log, "wb")
    environment = serverEnvironment(password)
    environment.update(env or {})
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
        env=environment, cwd=str(cwd or logDir), preexec_fn=preexec_fn,
    )
    server = kind(proc=proc, log=log, root=root, args=args, password=password, _logHandle=handle)
    try:
        for attribute, pattern in ready.items():
            match = server.waitLog(pattern, STARTUP_TIMEOUT)[0]
            if match.groups() and match.group(1).isdigit():
                setattr(server, attribute, int(match.group(1)))
    except BaseException:
        stop(server, check=False)
        raise
    return server


def stop(server: Running, check: bool = True) -> None:
    """SIGTERM, wait, and (when C{check}) insist on a clean exit and a clean log."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            if check:
                pytest.fail(f"server did not stop within {STOP_TIMEOUT}s of SIGTERM:\n{server.logText()}")
    server._logHandle.close()  # type: ignore[union-attr]
    if not check:
        return
    text = server.logText()
    # twistd re-raises the signal that stopped it once it has shut down cleanly.
    assert proc.returncode in (0, -signal.SIGTERM), f"server exited with {proc.returncode}:\n{text}"
    assert "Server Shut Down." in text, f"no clean shutdown in the log:\n{text}"
    for bad in ("Traceback", "Unhandled"):
        assert bad not in text, f"server log contains {bad!r}:\n{text}"


def runTwistd(
    *options: str, cwd: Path, password: str | None, timeout: float = 60, text: bool = False,
) -> subprocess.CompletedProcess:
    """Run C{twistd -n --pidfile= echofile *options} to its exit (a usage error); fails if it does not exit."""
    try:
        return subprocess.run(
            twistdCommand(*options), stdin=subprocess.DEVNULL, capture_output=True, text=text,
            env=serverEnvironment(password), cwd=str(cwd), timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"twistd echofile {' '.join(options)} did not exit: the bad value was accepted")
