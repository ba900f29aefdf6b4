"""
Chat fan-out against a C IRC server: SAY to N logged-in echofile guest
sessions against ngircd's channel PRIVMSG to N members, from one load
generator (benchmarks/fanoutload.c, C and epoll, on the client core) with one
timing rule: from sending the line until the last receiver has it.

    python benchmarks/run.py --only fanout [--quick]
    python benchmarks/fanoutbench.py             # the same, on its own

Both servers run on the server core (run.SERVER_CPUS).  echofile runs with
its caps raised on its command line (run.echofileServer: --max-connections
and --max-per-ip 50000, --idle-timeout 3600).  ngircd (Debian's, ``apt-get
install ngircd``; the test suite never needs it) runs in the foreground
(-n) from a config file written here: MaxConnections 0 and MaxConnectionsIP
0 (no cap), MaxJoins 0, MaxPenaltyTime 0 (no flood penalties), Ping/Pong
timeouts of an hour, no DNS, IDENT or PAM.  Per receivers count and server:
round completion p50/p99, the server's CPU time per delivered line (load
does not change it much, unlike wall-clock), and how busy the load
generator itself was (it must not be the bottleneck).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import run
from run import median, progress

RECEIVERS = (1000, 5000)
#: --quick stops at 1,000: ngircd takes 100-240 s to seat 5,000 channel members (every JOIN is announced to
#: every member, 12.5 million lines), which alone would be more than the whole quick run may take.
QUICK_RECEIVERS = (1000,)
NGIRCD_CONF = """\
[Global]
Name = fanout.bench
Info = echofile fan-out benchmark
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = fanout
PidFile =
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 16
MaxPenaltyTime = 0
PingTimeout = 3600
PongTimeout = 3600
[Options]
DNS = no
Ident = no
PAM = no
IncludeDir = {empty}
"""


def ngircdServer(logDir: Path) -> run.Server:
    ngircd = shutil.which("ngircd") or "/usr/sbin/ngircd"
    port = run.freePort()
    empty = logDir / "ngircd.conf.d"
    empty.mkdir(exist_ok=True)
    conf = logDir / "ngircd.conf"
    conf.write_text(NGIRCD_CONF.format(port=port, empty=empty))
    return run.startServer("ngircd", [ngircd, "-n", "-f", str(conf)], {"irc": port}, log=logDir / "ngircd.out")


def stop(server: run.Server) -> None:
    """SIGKILL: ngircd says goodbye to every session on SIGTERM, which takes seconds at 5,000."""
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def drive(loadgen: Path, server: run.Server, proto: str, secret: str, receivers: list[int], rounds: int) -> list[dict]:
    """One load generator for every receivers count in turn; the server's CPU time read around each measurement."""
    port = server.ports["files" if proto == "echofile" else "irc"]
    proc = subprocess.Popen([str(loadgen), proto, str(port), ",".join(map(str, receivers)), str(rounds), secret],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=run._preexec(run.CLIENT_CPUS))
    out = []
    try:
        for count in receivers:
            ready = json.loads(proc.stdout.readline() or "null")
            if not ready or ready.get("ready") != count:
                raise RuntimeError(f"fanoutload ({proto}) failed before {count} receivers were ready")
            t0 = server.ps.cpu_times()
            proc.stdin.write("\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"fanoutload ({proto}) failed at {count} receivers")
            r = json.loads(line)
            t1 = server.ps.cpu_times()
            lines = (rounds + 5) * count  # the 5 warm-up rounds are in the window too
            user, system = t1.user - t0.user, t1.system - t0.system
            r.update(setup_s=ready["setup_s"], server_cpu_s=user + system,
                     cpu_us_per_line=(user + system) / lines * 1e6, user_us_per_line=user / lines * 1e6,
                     sys_us_per_line=system / lines * 1e6, client_busy=r["client_cpu_s"] / r["rounds_s"])
            out.append(r)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def benchFanout(args, results: dict, logDir: Path) -> None:
    loadgen = run.buildLoadGenerator(logDir, "fanoutload")
    rounds = 30 if args.quick else 200
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-fanout-")
    samples = results.setdefault("fanout", [])
    try:
        for rep in range(1 if args.quick else args.reps):
            for name in run.rotated(["echofile", "ngircd"], rep):
                server = run.echofileServer(root, password, logDir) if name == "echofile" else ngircdServer(logDir)
                try:
                    got = drive(loadgen, server, "echofile" if name == "echofile" else "irc",
                                password if name == "echofile" else "#fanout", list(QUICK_RECEIVERS if args.quick else RECEIVERS), rounds)
                finally:
                    stop(server) if name == "ngircd" else server.stop()
                for r in got:
                    r.update(server=name, rep=rep)
                    samples.append(r)
                    progress(f"fanout {name:8} {r['receivers']:5} receivers: p50 {r['p50_us'] / 1e3:7.2f} ms "
                             f"p99 {r['p99_us'] / 1e3:7.2f} ms, server {r['cpu_us_per_line']:.2f} CPU-µs/line, "
                             f"load generator {r['client_busy']:.0%} busy, set-up {r['setup_s']:.1f} s")
        for line in report(results)[3:]:
            progress(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict) -> list[str]:
    if "fanout" not in results:
        return []
    ss = results["fanout"]
    lines = ["", "## Chat fan-out: echofile SAY against ngircd channel PRIVMSG (until the last receiver has it)", "",
             "| receivers | server | p50 | p99 | p99 / p50 | server CPU-µs per line (user + sys) | load generator busy | "
             "ngircd p50 / echofile p50 |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for (count,), of in sorted(run.group(ss, "receivers").items()):
        p50 = {n: median([s["p50_us"] for s in xs]) for (n,), xs in run.group(of, "server").items()}
        for (name,), xs in sorted(run.group(of, "server").items()):
            p99 = median([s["p99_us"] for s in xs])
            ratio = p50.get("ngircd", float("nan")) / p50.get("echofile", float("nan"))
            lines.append(f"| {count:,} | {name} | {p50[name] / 1e3:.2f} ms | {p99 / 1e3:.2f} ms | {p99 / p50[name]:.2f} | "
                         f"{median([s['cpu_us_per_line'] for s in xs]):.2f} "
                         f"({median([s['user_us_per_line'] for s in xs]):.2f} + {median([s['sys_us_per_line'] for s in xs]):.2f}) | "
                         f"{median([s['client_busy'] for s in xs]):.0%} | {ratio:.2f}x |")
    return lines


if __name__ == "__main__":
    sys.argv[1:1] = ["--only", "fanout"] if "--only" not in sys.argv else []
    run.main()
