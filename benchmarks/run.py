"""
echofile benchmarks: every figure with a goal (benchmarks/goals.py) against reference servers.

    python benchmarks/run.py            # full run (about 25 minutes)
    python benchmarks/run.py --quick    # under 3 minutes: every goal's ratio, shorter runs
    python benchmarks/run.py --only echo,file --reps 5
    python benchmarks/run.py --only hash,resume   # HASH and RESUME (benchmarks/hashbench.py)
    python benchmarks/run.py --only cluster       # SAY fan-out, --cluster against one instance (clusterbench.py)
    python benchmarks/run.py --only metrics       # echofile with --metrics (scraped every second) against without
    python benchmarks/run.py --only tls           # FILE over TLS against a blocking Python ssl server
    python benchmarks/run.py --only logs          # twistd log lines and bytes per files session
    python benchmarks/run.py --only handshakes    # TLS handshakes/s against openssl s_server (handshakes.py)
    python benchmarks/run.py --only downloads     # 1,000 concurrent 10 MiB downloads against pyftpdlib (downloads.py)
    python benchmarks/run.py --only fanout        # SAY fan-out against ngircd's channel PRIVMSG (fanoutbench.py)
    python benchmarks/run.py --only sessioncost   # instructions per files session under callgrind, against the greeter (sessioncost.py)

Every server (echofile under ``twistd``, and the reference servers in
``benchmarks/servers/``) is started here on 127.0.0.1, pinned to one core;
the load generators run in other processes pinned to another core.  Runs are
interleaved (each repetition goes through every server, in a rotating order)
and the medians are reported.  Results go to ``benchmarks/results/``:
``results.md`` (tables), ``results.json`` (every sample) and
``performance.png`` (requests/s against connections, MB/s against file size).

Needs: gcc (the echo load generator is a small C program), and the ``bench``
extra (``pip install -e '.[bench]'``: uvloop, psutil, matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVERS = HERE / "servers"
KiB, MiB, GiB = 1024, 1024**2, 1024**3
PYTHON = sys.executable

#: What a plain run (and --quick) measures: every figure issues 15 and 16 set a goal for (benchmarks/goals.py).
DEFAULT_SECTIONS = "echo,file,tls,scale,handshakes,fanout,downloads,metrics"

# -- process plumbing -----------------------------------------------------------


def cpuPlan() -> tuple[set[int] | None, set[int] | None]:
    """Server on the first allowed core, clients on the others (None: no pinning possible)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return {allowed[0]}, set(allowed[1:])


SERVER_CPUS, CLIENT_CPUS = cpuPlan()


def _preexec(cpus: set[int] | None):
    def run() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpus:
            os.sched_setaffinity(0, cpus)

    return run


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.args}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}: {proc.args}")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    ports: dict[str, int]
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    def cpuSeconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def stop(self) -> None:
        stopProcess(self.proc)


def stopProcess(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10) -> None:
    """Stop C{proc} with C{sig} (SIGINT: twistd stops its reactor), killed if it is not gone within C{timeout}."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def startServer(name: str, argv: list[str], ports: dict[str, int], env: dict[str, str] | None = None,
                cwd: str | None = None, log: Path | None = None) -> Server:
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})}, cwd=cwd, preexec_fn=_preexec(SERVER_CPUS),
    )
    for port in ports.values():
        waitForPort(port, proc)
    return Server(name, proc, ports)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def testPem() -> str:
    """Twisted's test certificate and key (one file): enough for a benchmark on 127.0.0.1."""
    import twisted.test

    return str(Path(twisted.test.__file__).parent / "server.pem")


def echofileServer(root: str, password: str, logDir: Path, metrics: bool = False, tls: bool = False) -> Server:
    echo, files = freePort(), freePort()
    ports = {"echo": echo, "files": files}
    extra = []
    if metrics:
        ports["metrics"] = freePort()
        extra = [f"--metrics=tcp:{ports['metrics']}:interface=127.0.0.1"]
    argv = [
        PYTHON, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "--reactor=epoll", f"--logfile={logDir / 'twistd.log'}",
        "echofile",
        f"--echo=tcp:{echo}:interface=127.0.0.1:backlog=4096",
        (f"--files=ssl:{files}:interface=127.0.0.1:backlog=4096:privateKey={testPem()}:certKey={testPem()}" if tls
         else f"--files=tcp:{files}:interface=127.0.0.1:backlog=4096"),
        f"--root={root}", "--max-connections=50000", "--max-per-ip=50000", "--idle-timeout=3600", *extra,
    ]
    name = "echofile+metrics" if metrics else "echofile-tls" if tls else "echofile"
    return startServer(name, argv, ports, env={"ECHOFILE_PASSWORD": password}, cwd=root,
                       log=logDir / f"{name}.out")


def twistedEchoServer(logDir: Path) -> Server:
    port = freePort()
    return startServer("twisted-minimal", [PYTHON, str(SERVERS / "twisted_echo.py"), str(port)],
                       {"echo": port}, log=logDir / "twisted_echo.out")


def twistedGreeterServer(logDir: Path) -> Server:
    port = freePort()
    return startServer("twisted-greeter", [PYTHON, str(SERVERS / "twisted_greeter.py"), str(port)],
                       {"files": port, "echo": port}, log=logDir / "twisted_greeter.out")


def uvloopEchoServer(logDir: Path) -> Server:
    port = freePort()
    return startServer("asyncio-uvloop", [PYTHON, str(SERVERS / "uvloop_echo.py"), str(port)],
                       {"echo": port}, log=logDir / "uvloop_echo.out")


def sendfileServer(root: str, logDir: Path) -> Server:
    port = freePort()
    return startServer("plain-sendfile", [PYTHON, str(SERVERS / "sendfile_server.py"), str(port), root],
                       {"files": port}, log=logDir / "sendfile.out")


def tlsServer(root: str, logDir: Path) -> Server:
    port = freePort()
    return startServer("plain-python-ssl", [PYTHON, str(SERVERS / "tls_server.py"), str(port), root, testPem()],
                       {"files": port}, log=logDir / "tls_server.out")


def client(argv: list[str], timeout: float = 600) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, preexec_fn=_preexec(CLIENT_CPUS))
    if done.returncode != 0:
        raise RuntimeError(f"client failed ({done.returncode}): {argv}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rotated(items: list, shift: int) -> list:
    shift %= len(items)
    return items[shift:] + items[:shift]


# -- echo ---------------------------------------------------------------------


def buildLoadGenerator(buildDir: Path, name: str = "echoload") -> Path:
    """Compile the C load generator C{benchmarks/NAME.c} (echoload, fanoutload) into C{buildDir}."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit(f"this benchmark needs gcc (or cc) to build benchmarks/{name}.c")
    binary = buildDir / name
    subprocess.run([gcc, "-O2", "-o", str(binary), str(HERE / f"{name}.c")], check=True)
    return binary


def benchEcho(args, results: dict, logDir: Path) -> None:
    loadgen = buildLoadGenerator(logDir)
    if args.quick:
        configs = [(100, 1 * KiB), (10, 1 * KiB)]
        warmup, duration = 0.5, 2.0
    else:
        configs = [(1, 1 * KiB), (10, 1 * KiB), (100, 1 * KiB), (1000, 1 * KiB), (100, 16 * KiB)]
        warmup, duration = 1.0, 4.0
    samples = results.setdefault("echo", [])
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    try:
        servers = [echofileServer(root, password, logDir), twistedEchoServer(logDir), uvloopEchoServer(logDir)]
        try:
            for rep in range(args.reps):
                for conns, size in configs:
                    for server in rotated(servers, rep):
                        cpu0 = server.cpuSeconds()
                        r = client([str(loadgen), "127.0.0.1", str(server.ports["echo"]), str(conns), str(size),
                                    str(warmup), str(duration)])
                        cpu = server.cpuSeconds() - cpu0
                        sample = {
                            "server": server.name, "connections": conns, "size": size, "rep": rep,
                            "rps": r["requests"] / r["seconds"], "mbps": r["requests"] * size / r["seconds"] / 1e6,
                            "p50_us": r["p50_us"], "p99_us": r["p99_us"], "errors": r["errors"],
                            "server_cpu": cpu / (warmup + duration),
                            "cpu_us_per_req": cpu / max(1, r["all_requests"]) * 1e6,
                        }
                        samples.append(sample)
                        progress(f"echo {server.name:16} {conns:5} x {size:6} B: {sample['rps']:9.0f} req/s "
                                 f"p50 {r['p50_us']:.0f} us p99 {r['p99_us']:.0f} us cpu {sample['server_cpu']:.2f} "
                                 f"({sample['cpu_us_per_req']:.1f} us/req)")
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- file ---------------------------------------------------------------------


def makeFile(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    with open(path, "rb") as f:  # warm the page cache: the benchmark is about the cached case
        while f.read(16 * MiB):
            pass


def _fileDownloads(args, samples: list, label: str, sizes: list[int], maxRepeats: int,
                   makeServers, clientExtra: tuple[str, ...] = ()) -> None:
    """
    FILE of cached files of C{sizes} from each of C{makeServers(root,
    password)}'s servers, interleaved, C{args.reps} times: MB/s and server
    CPU per GiB into C{samples}.
    """
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    try:
        names = {}
        for size in sizes:
            names[size] = f"file-{size // MiB}MiB.bin"
            makeFile(Path(root) / names[size], size)
        servers = makeServers(root, password)
        try:
            for rep in range(args.reps):
                for size in sizes:
                    repeats = max(1, min(maxRepeats, GiB // 2 // size)) if size < GiB else 1
                    for server in rotated(servers, rep):
                        cpu0 = server.cpuSeconds()
                        r = client([PYTHON, str(HERE / "fileclient.py"), str(server.ports["files"]), password,
                                    names[size], str(repeats), *clientExtra])
                        cpu = server.cpuSeconds() - cpu0
                        assert r["size"] == size, r
                        total = size * repeats
                        sample = {
                            "server": server.name, "size": size, "rep": rep, "repeats": repeats,
                            "mbps": total / sum(r["seconds"]) / 1e6, "cpu_per_gib": cpu / (total / GiB),
                        }
                        samples.append(sample)
                        progress(f"{label} {server.name:16} {size // MiB:5} MiB x {repeats:3}: "
                                 f"{sample['mbps']:8.0f} MB/s, {sample['cpu_per_gib']:.3f} CPU-s/GiB")
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def benchFile(args, results: dict, logDir: Path) -> None:
    """FILE of a cached file over plain TCP: echofile (sendfile) against a blocking sendfile server."""
    sizes = [10 * MiB, 1 * GiB] if args.quick else [1 * MiB, 10 * MiB, 100 * MiB, 1 * GiB]
    _fileDownloads(args, results.setdefault("file", []), "file", sizes, 50,
                   lambda root, password: [echofileServer(root, password, logDir), sendfileServer(root, logDir)])


# -- tls ----------------------------------------------------------------------


def benchTls(args, results: dict, logDir: Path) -> None:
    """
    FILE of a cached file over TLS: echofile (ssl: endpoint) against a blocking Python ssl server.

    Two samples more than --reps: one sample of either server swings by up to 1.5x on a shared VM
    (the reference's more), so the medians need more of them; the server CPU per GiB is steadier.
    """
    sizes = [1 * GiB] if args.quick else [100 * MiB, 1 * GiB]
    args = argparse.Namespace(**{**vars(args), "reps": args.reps + 2})
    _fileDownloads(args, results.setdefault("tls", []), "tls", sizes, 10,
                   lambda root, password: [echofileServer(root, password, logDir, tls=True), tlsServer(root, logDir)],
                   clientExtra=("tls",))


# -- metrics ------------------------------------------------------------------


@contextlib.contextmanager
def scraping(servers: list[Server], interval: float = 1.0) -> Iterator[list[int]]:
    """GET /metrics of every server that has it, every C{interval} s (Prometheus does every 15 s or so)."""
    import threading
    import urllib.request

    stop = threading.Event()
    scrapes = [0]

    def run() -> None:
        while not stop.wait(interval):
            for server in servers:
                if "metrics" in server.ports:
                    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics", timeout=10) as r:
                        r.read()
                    scrapes[0] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield scrapes
    finally:
        stop.set()
        thread.join()


def benchMetrics(args, results: dict, logDir: Path) -> None:
    """echo 100 x 1 KiB and FILE 1 GiB, echofile with --metrics (scraped) against without, interleaved."""
    loadgen = buildLoadGenerator(logDir)
    warmup, duration = (0.5, 2.0) if args.quick else (1.0, 4.0)
    samples = results.setdefault("metrics", [])
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    try:
        makeFile(Path(root) / "file-1024MiB.bin", GiB)
        # A second server without --metrics calibrates the noise: on this VM two identical servers differ
        # by up to 15 % in one run, so an on/off ratio is only read against this off/off one.
        twin = echofileServer(root, password, logDir)
        twin.name = "echofile (twin)"
        servers = [echofileServer(root, password, logDir), echofileServer(root, password, logDir, metrics=True), twin]
        try:
            with scraping(servers) as scrapes:
                for rep in range(args.reps):
                    for server in rotated(servers, rep):
                        cpu0 = server.cpuSeconds()
                        r = client([str(loadgen), "127.0.0.1", str(server.ports["echo"]), "100", str(KiB),
                                    str(warmup), str(duration)])
                        cpu = server.cpuSeconds() - cpu0
                        samples.append({"server": server.name, "test": "echo 100 x 1 KiB", "rep": rep,
                                        "value": r["requests"] / r["seconds"], "unit": "req/s",
                                        "cost": cpu / max(1, r["all_requests"]) * 1e6, "cost_unit": "CPU-µs/req"})
                        progress(f"metrics {server.name:16} echo 100 x 1 KiB: {samples[-1]['value']:9.0f} req/s, "
                                 f"{samples[-1]['cost']:.1f} CPU-µs/req")
                        cpu0 = server.cpuSeconds()
                        r = client([PYTHON, str(HERE / "fileclient.py"), str(server.ports["files"]), password,
                                    "file-1024MiB.bin", "1"])
                        cpu = server.cpuSeconds() - cpu0
                        assert r["size"] == GiB, r
                        samples.append({"server": server.name, "test": "FILE 1 GiB", "rep": rep,
                                        "value": GiB / sum(r["seconds"]) / 1e6, "unit": "MB/s",
                                        "cost": cpu, "cost_unit": "CPU-s/GiB"})
                        progress(f"metrics {server.name:16} FILE 1 GiB:       {samples[-1]['value']:9.0f} MB/s, "
                                 f"{samples[-1]['cost']:.3f} CPU-s/GiB")
            progress(f"metrics: {scrapes[0]} scrapes of /metrics during the run")
            results.setdefault("metrics_idle", []).append(idleMetricsCost(servers[1], 5.0 if args.quick else 20.0))
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def idleMetricsCost(server: Server, seconds: float) -> dict:
    """
    What --metrics costs the server by itself: its CPU while otherwise idle,
    first unscraped (the reactor-lag probe alone), then scraped every second.
    Unlike the on/off ratios under load, this barely moves with the machine's
    noise, and it bounds the ratio: on / off >= 1 - (CPU per second / one core).
    """
    def cpu() -> float:
        # Nanoseconds on the CPU from the scheduler (psutil's times tick in 10 ms steps: too coarse here).
        tasks = Path(f"/proc/{server.proc.pid}/task")
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9

    cpu0 = cpu()
    time.sleep(seconds)
    quiet = (cpu() - cpu0) / seconds
    with scraping([server]) as scrapes:
        cpu0 = cpu()
        time.sleep(seconds)
        scraped = (cpu() - cpu0) / seconds
        count = scrapes[0]
    sample = {"idle_cpu_ms_per_s": quiet * 1e3, "scraped_cpu_ms_per_s": scraped * 1e3,
              "cpu_ms_per_scrape": (scraped - quiet) * seconds / max(1, count) * 1e3, "scrapes": count}
    progress(f"metrics idle: {sample['idle_cpu_ms_per_s']:.2f} ms/s unscraped, {sample['scraped_cpu_ms_per_s']:.2f} "
             f"ms/s scraped every second ({sample['cpu_ms_per_scrape']:.2f} ms per scrape)")
    return sample


# -- scale --------------------------------------------------------------------


#: Connects at once in the scale benchmark's burst (connections per second).
BURST = 2000


def settled(server: Server, quiet: float = 0.3, limit: float = 15.0) -> float:
    """Wait until the server's CPU time stops growing (its backlog of work is done); that CPU time."""
    last, still, deadline = server.cpuSeconds(), 0.0, time.monotonic() + limit
    while still < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        now = server.cpuSeconds()
        still = still + 0.05 if now - last < 0.002 else 0.0
        last = now
    return last


def benchScale(args, results: dict, logDir: Path) -> None:
    """
    10,000 sessions (ready time, server CPU per session, memory per idle
    session), then a burst of L{BURST} connects at once (connections per
    second, each answered: greeted, or one byte echoed).  The references:
    the minimal Twisted echo (no greeting: "ready" is the kernel's
    handshake) and the minimal Twisted greeter (one write in
    connectionMade: what a files session must do at the least).
    """
    count = args.sessions
    samples = results.setdefault("scale", [])
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    plan = [("echofile", "files"), ("echofile", "echo"), ("twisted-minimal", "echo"), ("twisted-greeter", "files")]
    if not args.quick:
        plan.append(("asyncio-uvloop", "echo"))
    makers = {"twisted-minimal": twistedEchoServer, "twisted-greeter": twistedGreeterServer,
              "asyncio-uvloop": uvloopEchoServer}
    try:
        for rep in range(1 if args.quick else args.reps):
            for name, mode in rotated(plan, rep):
                server = echofileServer(root, password, logDir) if name == "echofile" else makers[name](logDir)
                with running(server):
                    port = server.ports[mode]
                    # One session first, so that lazily imported code is not counted per session.
                    with socket.create_connection(("127.0.0.1", port)) as s:
                        if mode == "files":
                            s.recv(100)
                        else:
                            s.sendall(b"x")
                            s.recv(10)
                    time.sleep(0.3)
                    before = server.rss()
                    cpu0 = settled(server)
                    proc = subprocess.Popen(
                        [PYTHON, str(HERE / "scaleclient.py"), mode, str(port), str(count)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_preexec(CLIENT_CPUS),
                    )
                    try:
                        line = proc.stdout.readline()
                        if not line:
                            raise RuntimeError("scale client failed")
                        r = json.loads(line)
                        time.sleep(0.5)
                        after = server.rss()
                        cpu1 = settled(server)
                    finally:
                        with contextlib.suppress(BrokenPipeError):
                            proc.stdin.write("\n")
                            proc.stdin.close()
                        proc.wait(60)
                    settled(server)
                    b = client([PYTHON, str(HERE / "scaleclient.py"), mode, str(port), str(BURST), "burst"])
                sample = {
                    "server": name, "mode": mode, "sessions": r["sessions"], "rep": rep,
                    "connect_s": r["connect_s"], "echo_all_s": r.get("echo_all_s"),
                    "rss_before": before, "rss_after": after, "bytes_per_session": (after - before) / r["sessions"],
                    "cpu_us_per_session": (cpu1 - cpu0) / r["sessions"] * 1e6,
                    "burst": BURST, "conns_per_s": b["conns_per_s"],
                }
                samples.append(sample)
                progress(f"scale {name:16} {mode:5} {count} sessions: ready in {r['connect_s']:.2f} s"
                         + (f", one echo each in {r['echo_all_s']:.2f} s" if "echo_all_s" in r else "")
                         + f", {sample['cpu_us_per_session']:.0f} server CPU-us/session"
                         + f", {sample['bytes_per_session'] / 1000:.2f} KB/session"
                         + f"; burst of {BURST}: {b['conns_per_s']:,.0f} conn/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for line in scaleRatios(samples):
        progress(line)


def scaleRatios(samples: list[dict]) -> list[str]:
    """echofile's files and echo sessions against the minimal Twisted servers (medians): the issue 16 goal is <= 2x."""
    med = {key: {k: median([s[k] for s in ss if s.get(k) is not None]) for k in
                 ("connect_s", "cpu_us_per_session", "conns_per_s")}
           for key, ss in group(samples, "server", "mode").items()}
    lines = []
    for ours in (("echofile", "files"), ("echofile", "echo")):
        for ref in (("twisted-minimal", "echo"), ("twisted-greeter", "files")):
            if ours in med and ref in med:
                a, b = med[ours], med[ref]
                lines.append(
                    f"scale ratio echofile {ours[1]:5} / {ref[0]:15}: ready time {a['connect_s'] / b['connect_s']:.2f}x, "
                    f"server CPU per session {a['cpu_us_per_session'] / b['cpu_us_per_session']:.2f}x, "
                    f"burst conn/s {b['conns_per_s'] / a['conns_per_s']:.2f}x slower")
    return lines


# -- logs ---------------------------------------------------------------------

#: The session shapes of benchmarks/logsessions.py.
LOG_SHAPES = ("file-quit", "greet-quit", "greet-eof")


def _logSize(path: Path) -> tuple[int, int]:
    """Lines and bytes of the twistd log so far (0, 0 before it exists)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, 0
    return data.count(b"\n"), len(data)


def _settled(path: Path, quiet: float = 0.5, timeout: float = 20.0) -> tuple[int, int]:
    """The log's size once it stopped growing for C{quiet} seconds (the last close lines are in)."""
    last, since, deadline = _logSize(path), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _logSize(path)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def benchLogs(args, results: dict, logDir: Path) -> None:
    """
    What the server writes to its twistd log per files session (lines, bytes),
    and its CPU per session, for each shape of benchmarks/logsessions.py.
    Counts, not timings: a shared machine does not change them.
    """
    count = 50 if args.quick else 200
    samples = results.setdefault("logs", [])
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    ownLogs = Path(tempfile.mkdtemp(prefix="logs-", dir=logDir))
    log = ownLogs / "twistd.log"
    try:
        (Path(root) / "notes.txt").write_bytes(b"hello world\n")
        with running(echofileServer(root, password, ownLogs)) as server:
            client([PYTHON, str(HERE / "logsessions.py"), str(server.ports["files"]), password, "file-quit", "1"])
            for shape in LOG_SHAPES:
                lines0, bytes0 = _settled(log)
                cpu0 = server.cpuSeconds()
                client([PYTHON, str(HERE / "logsessions.py"), str(server.ports["files"]), password, shape, str(count)])
                lines1, bytes1 = _settled(log)
                cpu = server.cpuSeconds() - cpu0
                sample = {
                    "shape": shape, "sessions": count, "lines_per_session": (lines1 - lines0) / count,
                    "bytes_per_session": (bytes1 - bytes0) / count, "cpu_us_per_session": cpu / count * 1e6,
                }
                samples.append(sample)
                progress(f"logs {shape:10} {count} sessions: {sample['lines_per_session']:.2f} lines, "
                         f"{sample['bytes_per_session']:.0f} bytes of log, "
                         f"{sample['cpu_us_per_session']:.0f} server CPU-µs per session")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- report -------------------------------------------------------------------


def progress(text: str) -> None:
    print(text, flush=True)


def group(samples: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for s in samples:
        out.setdefault(tuple(s[k] for k in keys), []).append(s)
    return out


def report(results: dict) -> str:
    lines = [f"# echofile benchmark results ({results['meta']['date']})", ""]
    meta = results["meta"]
    lines.append(
        f"{meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}, Python {meta['python']}, "
        f"Twisted {meta['twisted']}, commit {meta['commit']}; server pinned to CPU {meta['server_cpus']}, "
        f"clients to {meta['client_cpus']}; load average at start {meta['loadavg']}. "
        f"Medians of {meta['reps']} interleaved runs."
    )
    import goals

    lines += goals.report(results)
    if "echo" in results:
        lines += ["", "## Echo ping-pong (C load generator)", "",
                  "| connections x size | server | req/s | MB/s | p50 µs | p99 µs | server CPU busy | "
                  "server CPU µs/req | echofile / this (req/s) | echofile / this (CPU per req) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        byConfig = group(results["echo"], "connections", "size")
        for (conns, size), samples in sorted(byConfig.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            perServer = group(samples, "server")
            meds = {name: median([s["rps"] for s in ss]) for (name,), ss in perServer.items()}
            cost = {name: median([s["cpu_us_per_req"] for s in ss]) for (name,), ss in perServer.items()}
            for (name,), ss in perServer.items():
                ratio = meds.get("echofile", float("nan")) / meds[name]
                costRatio = cost[name] / cost.get("echofile", float("nan"))
                lines.append(
                    f"| {conns} x {size} B | {name} | {meds[name]:,.0f} | {median([s['mbps'] for s in ss]):.1f} | "
                    f"{median([s['p50_us'] for s in ss]):.0f} | {median([s['p99_us'] for s in ss]):.0f} | "
                    f"{median([s['server_cpu'] for s in ss]):.0%} | {cost[name]:.1f} | {ratio:.2f} | {costRatio:.2f} |"
                )
    if "file" in results:
        lines += ["", "## File download (FILE on one logged-in connection, cached file)", "",
                  "| file size | server | MB/s | server CPU-s per GiB | echofile / this (MB/s) |",
                  "|---|---|---:|---:|---:|"]
        for (size,), samples in sorted(group(results["file"], "size").items()):
            perServer = group(samples, "server")
            meds = {name: median([s["mbps"] for s in ss]) for (name,), ss in perServer.items()}
            for (name,), ss in perServer.items():
                ratio = meds.get("echofile", float("nan")) / meds[name]
                lines.append(f"| {size // MiB} MiB | {name} | {meds[name]:,.0f} | "
                             f"{median([s['cpu_per_gib'] for s in ss]):.3f} | {ratio:.2f} |")
    if "tls" in results:
        count = max(s["rep"] for s in results["tls"]) + 1
        lines += ["", f"## File download over TLS (FILE on one logged-in TLS connection, cached file; {count} runs each)", "",
                  "| file size | server | MB/s | best MB/s | server CPU-s per GiB | echofile / this (MB/s) | "
                  "echofile / this (best MB/s) | this / echofile (CPU) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for (size,), samples in sorted(group(results["tls"], "size").items()):
            perServer = group(samples, "server")
            meds = {name: median([s["mbps"] for s in ss]) for (name,), ss in perServer.items()}
            best = {name: max(s["mbps"] for s in ss) for (name,), ss in perServer.items()}
            cost = {name: median([s["cpu_per_gib"] for s in ss]) for (name,), ss in perServer.items()}
            for (name,), ss in perServer.items():
                ratio = meds.get("echofile-tls", float("nan")) / meds[name]
                bestRatio = best.get("echofile-tls", float("nan")) / best[name]
                costRatio = cost[name] / cost.get("echofile-tls", float("nan"))
                lines.append(f"| {size // MiB} MiB | {name} | {meds[name]:,.0f} | {best[name]:,.0f} | {cost[name]:.3f} | "
                             f"{ratio:.2f} | {bestRatio:.2f} | {costRatio:.2f} |")
    if "scale" in results:
        lines += ["", "## Many idle sessions", "",
                  "| server | service | sessions | all ready (s) | one echo on each (s) | server CPU µs per session | "
                  "server memory per session | burst conn/s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for (name, mode), ss in group(results["scale"], "server", "mode").items():
            echoAll = [s["echo_all_s"] for s in ss if s["echo_all_s"] is not None]
            lines.append(
                f"| {name} | {mode} | {ss[0]['sessions']:,} | {median([s['connect_s'] for s in ss]):.2f} | "
                f"{f'{median(echoAll):.2f}' if echoAll else '-'} | "
                f"{median([s.get('cpu_us_per_session', float('nan')) for s in ss]):.0f} | "
                f"{median([s['bytes_per_session'] for s in ss]) / 1000:.2f} KB | "
                f"{median([s.get('conns_per_s', float('nan')) for s in ss]):,.0f} |"
            )
        lines += [""] + [f"- {line.removeprefix('scale ratio ')}" for line in scaleRatios(results["scale"])]
    if "metrics" in results:
        lines += ["", "## --metrics on (scraped every second) against off", "",
                  "| test | off | on | on / off | on / off, median of the reps' pairs | "
                  "off (twin) / off: the noise between identical servers | server CPU off | on | off / on (CPU) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for (test,), ss in group(results["metrics"], "test").items():
            perServer = group(ss, "server")
            meds = {name: median([s["value"] for s in xs]) for (name,), xs in perServer.items()}
            cost = {name: median([s["cost"] for s in xs]) for (name,), xs in perServer.items()}
            off, on = meds.get("echofile", float("nan")), meds.get("echofile+metrics", float("nan"))
            twin = meds.get("echofile (twin)", float("nan"))
            costOff, costOn = cost.get("echofile", float("nan")), cost.get("echofile+metrics", float("nan"))
            unit, costUnit = ss[0]["unit"], ss[0]["cost_unit"]
            byRep = {(s["server"], s["rep"]): s["value"] for s in ss}
            pairs = [byRep[("echofile+metrics", rep)] / byRep[("echofile", rep)]
                     for (name, rep) in byRep if name == "echofile" and ("echofile+metrics", rep) in byRep]
            lines.append(f"| {test} | {off:,.0f} {unit} | {on:,.0f} {unit} | {on / off:.3f}x | {median(pairs):.3f}x | "
                         f"{twin / off:.3f}x | "
                         f"{costOff:.3f} {costUnit} | {costOn:.3f} {costUnit} | {costOff / costOn:.3f}x |")
    for sample in results.get("metrics_idle", []):
        bound = 1 - sample["scraped_cpu_ms_per_s"] / 1e3
        lines += ["", f"--metrics by itself, server otherwise idle: {sample['idle_cpu_ms_per_s']:.2f} CPU-ms per second "
                  f"unscraped (its periodic calls, the reactor-lag probe among them), {sample['scraped_cpu_ms_per_s']:.2f} scraped every second "
                  f"({sample['cpu_ms_per_scrape']:.2f} ms per scrape): at most {1 - bound:.2%} of one core, so "
                  f"on / off >= {bound:.4f}x on a saturated server."]
    if "logs" in results:
        lines += ["", "## twistd log per files session", "",
                  "| session | lines | bytes | server CPU µs |", "|---|---:|---:|---:|"]
        for s in results["logs"]:
            lines.append(f"| {s['shape']} | {s['lines_per_session']:.2f} | {s['bytes_per_session']:.0f} | "
                         f"{s['cpu_us_per_session']:.0f} |")
    import hashbench

    lines += hashbench.report(results)
    import clusterbench

    lines += clusterbench.report(results)
    import handshakes

    lines += handshakes.report(results)
    import downloads

    lines += downloads.report(results)
    import fanoutbench

    lines += fanoutbench.report(results)
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if "echo" in results:
        oneK = [s for s in results["echo"] if s["size"] == KiB]
        for (name,), ss in sorted(group(oneK, "server").items()):
            points = sorted((c, median([s["rps"] for s in cs])) for (c,), cs in group(ss, "connections").items())
            left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        left.set_xscale("log")
        left.set_xlabel("connections (1 KiB messages)")
        left.set_ylabel("requests/s (median)")
        left.set_title("Echo ping-pong")
        left.legend()
        left.grid(True, alpha=0.3)
    if "file" in results:
        for (name,), ss in sorted(group(results["file"], "server").items()):
            points = sorted((size / MiB, median([s["mbps"] for s in cs]))
                            for (size,), cs in group(ss, "size").items())
            right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        right.set_xscale("log")
        right.set_xlabel("file size (MiB)")
        right.set_ylabel("MB/s (median)")
        right.set_title("File download")
        right.legend()
        right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def meta(args) -> dict:
    import twisted

    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count(),
        "kernel": platform.release(), "python": platform.python_version(), "twisted": twisted.__version__,
        "commit": commit, "server_cpus": sorted(SERVER_CPUS or []), "client_cpus": sorted(CLIENT_CPUS or []),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "reps": args.reps, "quick": args.quick,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer configurations and shorter runs (< 3 minutes)")
    parser.add_argument("--only", default=DEFAULT_SECTIONS,
                        help="comma-separated subset of echo,file,scale,hash,resume,cluster,metrics,tls,logs,handshakes,downloads,fanout,"
                             "sessioncost")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions per measurement (default 3)")
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions for the scale benchmark")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder (git-ignored)")
    args = parser.parse_args()
    import clusterbench
    import downloads
    import goals
    import handshakes
    import fanoutbench
    import hashbench
    import sessioncost
    args.out.mkdir(parents=True, exist_ok=True)
    logDir = Path(tempfile.mkdtemp(prefix="echofile-bench-logs-"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.sessions + 200:
        progress(f"RLIMIT_NOFILE hard limit is {hard}: scale benchmark limited to {hard - 200} sessions")
        args.sessions = hard - 200
    results: dict = {"meta": meta(args)}
    if SERVER_CPUS is None:
        progress("only one core available: server and clients are not pinned apart")
    started = time.monotonic()
    try:
        for part in args.only.split(","):
            {"echo": benchEcho, "file": benchFile, "scale": benchScale, "hash": hashbench.benchHash,
             "resume": hashbench.benchResume, "cluster": clusterbench.benchCluster, "metrics": benchMetrics,
             "tls": benchTls, "logs": benchLogs, "handshakes": handshakes.benchHandshakes,
             "downloads": downloads.benchDownloads, "fanout": fanoutbench.benchFanout,
             "sessioncost": sessioncost.benchSessionCost}[part.strip()](args, results, logDir)
    finally:
        results["meta"]["seconds"] = round(time.monotonic() - started, 1)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        text = report(results)
        (args.out / "results.md").write_text(text)
        plot(results, args.out / "performance.png")
        goals.plot(results, args.out / "goals.png")
        print()
        print(text)
        print(f"written to {args.out}/ (results.md, results.json, performance.png, goals.png) in "
              f"{results['meta']['seconds']} s; server logs in {logDir}")


if __name__ == "__main__":
    main()
