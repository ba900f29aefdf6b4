"""
What one files session costs the server, in instructions (issue 16, goal 2):
a count that load does not move, split into connect (accept, admit, greet)
and close (the client's close, the session's teardown and close line).

    python benchmarks/run.py --only sessioncost [--quick]

Runs ``twistd -n echofile`` and the minimal Twisted greeter
(``servers/twisted_greeter.py``) under ``valgrind --tool=callgrind`` in
turn; warms each up with 200 sessions, then zeroes the counters
(``callgrind_control -z``), opens N sessions at once and waits for every
greeting (dump 1: connect), closes them all and waits until the server is
idle (dump 2: close).  User-space instructions only: the kernel's side of
the system calls is not in them (``strace -c -f`` counts those).
"""

from __future__ import annotations

import glob
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from run import PYTHON, SERVERS, freePort, progress, stopProcess

WARM_UP = 200


def _argv(which: str, port: int, root: str, logDir: Path) -> list[str]:
    if which == "greeter":
        return [PYTHON, str(SERVERS / "twisted_greeter.py"), str(port)]
    return [
        PYTHON, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--reactor=epoll",
        f"--logfile={logDir / 'twistd.log'}", "echofile", f"--echo=tcp:{freePort()}:interface=127.0.0.1:backlog=4096",
        f"--files=tcp:{port}:interface=127.0.0.1:backlog=4096", f"--root={root}", "--max-connections=50000",
        "--max-per-ip=50000", "--idle-timeout=3600",
    ]


def _sessions(port: int, count: int) -> list[socket.socket]:
    """C{count} connects at once; returns once every one was greeted."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    got = {s.fileno(): b"" for s in socks}
    byFd = {s.fileno(): s for s in socks}
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    done = 0
    while done < count:
        events = ep.poll(120)
        if not events:
            raise RuntimeError("greetings stopped coming")
        for fd, _ in events:
            got[fd] += byFd[fd].recv(4096)
            if got[fd].endswith(b"\r\n"):
                ep.unregister(fd)
                done += 1
    ep.close()
    return socks


def _settle(proc: psutil.Process) -> None:
    """Wait until the server uses no CPU (the last close lines are written)."""
    last = None
    while True:
        t = proc.cpu_times()
        now = t.user + t.system
        if last is not None and now - last < 0.02:
            return
        last = now
        time.sleep(0.5)


def _total(path: str) -> int:
    for line in open(path):
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def measure(which: str, count: int, logDir: Path) -> dict:
    """Instructions per session of server C{which} ("files" or "greeter"), connect and close."""
    out = Path(tempfile.mkdtemp(prefix=f"callgrind-{which}-", dir=logDir))
    root = tempfile.mkdtemp(prefix="root-", dir=out)
    port = freePort()
    env = dict(os.environ, ECHOFILE_PASSWORD="sessioncost-" + os.urandom(4).hex())
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", *_argv(which, port, root, out)],
        env=env, cwd=out, stdout=open(out / "server.out", "w"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.settimeout(60)
                    s.recv(100)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{which} did not start under valgrind (see {out}/server.out)")
                time.sleep(0.3)
        ps = psutil.Process(proc.pid)
        for s in _sessions(port, WARM_UP):
            s.close()
        _settle(ps)
        control = ["callgrind_control"]
        subprocess.run([*control, "-z", str(proc.pid)], check=True, capture_output=True)
        socks = _sessions(port, count)
        _settle(ps)
        subprocess.run([*control, "-d", str(proc.pid)], check=True, capture_output=True)
        for s in socks:
            s.close()
        _settle(ps)
        subprocess.run([*control, "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        stopProcess(proc, timeout=60)  # under valgrind: slow to stop
    dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    connect, close = _total(dumps[0]), _total(dumps[1])
    return {"server": which, "sessions": count, "connect": round(connect / count), "close": round(close / count),
            "session": round((connect + close) / count)}


def benchSessionCost(args, results: dict, logDir: Path) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        progress("sessioncost: valgrind is not installed, skipped")
        return
    count = 500 if args.quick else 2000
    samples = results.setdefault("sessioncost", [])
    for which in ("files", "greeter"):
        progress(f"sessioncost: {which} under callgrind, {count} sessions")
        samples.append(measure(which, count, logDir))
    byServer = {s["server"]: s for s in samples}
    files, greeter = byServer["files"], byServer["greeter"]
    for s in (files, greeter):
        progress(f"sessioncost {s['server']:7}: instructions per session: connect {s['connect']:,}, "
                 f"close {s['close']:,}, whole session {s['session']:,}")
    progress(f"sessioncost ratio files / greeter: connect {files['connect'] / greeter['connect']:.2f}x, "
             f"close {files['close'] / greeter['close']:.2f}x, whole session {files['session'] / greeter['session']:.2f}x "
             f"(goal <= 2x)")
