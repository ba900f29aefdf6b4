"""
SAY fan-out with ``--cluster``: 1,000 sessions on two instances sharing a
redis-server, against the same 1,000 on one instance without Redis, in one
run (interleaved repetitions), as a ratio.

    python benchmarks/run.py --only cluster
    python benchmarks/clusterbench.py            # the same, on its own

The latency of one SAY is from sending it until the last of the other 999
sessions has it (benchmarks/fanoutclient.py, in its own process on the
client core).  Both instances and redis-server share the server core, as
one instance does alone: the comparison is the cost of the broker hop and
of a second process, not of more hardware.  Clients connect to the
instances directly (no HAProxy).
"""

from __future__ import annotations

import secrets
import sys
import tempfile
from pathlib import Path

import run
from run import HERE, PYTHON, client, median, progress

SESSIONS = 1000


def redisServer(logDir: Path) -> run.Server:
    port = run.freePort()
    return run.startServer(
        "redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(logDir)],
        {"redis": port}, log=logDir / "redis.out",
    )


def instance(root: str, password: str, logDir: Path, *extra: str) -> run.Server:
    echo, files = run.freePort(), run.freePort()
    argv = [
        PYTHON, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "--reactor=epoll", f"--logfile={logDir / f'twistd-{files}.log'}",
        "echofile", f"--echo=tcp:{echo}:interface=127.0.0.1", f"--files=tcp:{files}:interface=127.0.0.1:backlog=4096",
        f"--root={root}", "--max-connections=50000", "--max-per-ip=50000", "--idle-timeout=3600", *extra,
    ]
    return run.startServer("echofile", argv, {"echo": echo, "files": files},
                           env={"ECHOFILE_PASSWORD": password}, cwd=root, log=logDir / "echofile.out")


def fanout(ports: list[int], password: str, messages: int) -> dict:
    return client([PYTHON, str(HERE / "fanoutclient.py"), "--ports", ",".join(map(str, ports)),
                   "--sessions", str(SESSIONS), "--messages", str(messages), "--password", password])


def benchCluster(args, results: dict, logDir: Path) -> None:
    password = secrets.token_urlsafe(12)
    messages = 50 if args.quick else 200
    root = tempfile.mkdtemp(prefix="echofile-bench-cluster-")
    samples = results.setdefault("cluster", [])
    for rep in range(args.reps):
        for mode in run.rotated(["one instance", "two instances + Redis"], rep):
            progress(f"cluster: {mode}, {SESSIONS} sessions, {messages} SAYs (rep {rep + 1}/{args.reps})")
            servers: list[run.Server] = []
            try:
                if mode == "one instance":
                    servers.append(instance(root, password, logDir))
                    ports = [servers[0].ports["files"]]
                else:
                    redis = redisServer(logDir)
                    servers.append(redis)
                    url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
                    for _ in range(2):
                        servers.append(instance(root, password, logDir, "--cluster", url))
                    ports = [s.ports["files"] for s in servers[1:]]
                sample = fanout(ports, password, messages)
                sample.update(mode=mode, rep=rep)
                samples.append(sample)
            finally:
                for server in reversed(servers):
                    server.stop()


def report(results: dict) -> list[str]:
    if "cluster" not in results:
        return []
    ss = results["cluster"]
    lines = ["", f"## SAY fan-out to {SESSIONS:,} sessions (until the last recipient has it)", "",
             "| setup | p50 | p99 | extra deliveries |", "|---|---:|---:|---:|"]
    p50, p99 = {}, {}
    for mode in ("one instance", "two instances + Redis"):
        of = [s for s in ss if s["mode"] == mode]
        p50[mode], p99[mode] = median([s["p50_us"] for s in of]), median([s["p99_us"] for s in of])
        lines.append(f"| {mode} | {p50[mode] / 1e3:.2f} ms | {p99[mode] / 1e3:.2f} ms | {sum(s['extra'] for s in of)} |")
    two, one = "two instances + Redis", "one instance"
    lines.append(f"| ratio (two + Redis / one) | {p50[two] / p50[one]:.2f} | {p99[two] / p99[one]:.2f} | |")
    return lines


if __name__ == "__main__":
    sys.argv[1:1] = ["--only", "cluster"] if "--only" not in sys.argv else []
    run.main()
