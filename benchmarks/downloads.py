"""
1,000 concurrent downloads of a 10 MiB file (issue 16, goal 6): echofile
(FILE over ``tcp:``, logged-in sessions) against pyftpdlib (passive RETR).

    python benchmarks/run.py --only downloads [--quick]

One load generator process (benchmarks/downloadclient.py, uvloop) on the
client core speaks both: it opens and logs in every session first (not
timed), then starts every download at once and times each to its end.
echofile runs as in the other sections (``--max-connections`` and
``--max-per-ip`` raised to 50,000 on its command line: the defaults would
refuse most of the 1,000); pyftpdlib runs benchmarks/servers/ftp_server.py:
its default FTPHandler with sendfile, one process, ``max_cons`` lifted from
512 (it counts data channels too).  Both log their per-connection lines to
a file.

The full run also does 100 concurrent downloads: 1,000 fast loopback
connections can take the kernel's TCP memory (``tcp_mem``, machine-wide)
into pressure, where it drops segments and waits for retransmission
timeouts, and the p99 then measures that.  The machine-wide TCP counters
(retransmitted segments, RTO timeouts, receive-queue drops, memory-pressure
entries) are read around each run and reported with it.

Reported per server: aggregate MB/s (all bytes over the time until the last
download ended), p50/p99 completion time, the server's CPU seconds per GiB
sent, and the client's CPU over the timed part: when the client's core is
busy most of that time, the figure is the load generator's, not the
server's, and the section says so.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import run as bench

COUNT = 1000
#: Also in the full run: few enough connections that loopback TCP stays out of memory pressure on a quiet machine.
SMALL_COUNT = 100
SIZE = 10 * bench.MiB
NAME = "file-10MiB.bin"
#: Client core busy more than this share of the timed part: the figure measures the client.
CLIENT_BOUND = 0.8


def tcpTrouble() -> dict[str, int]:
    """Machine-wide TCP counters (other processes' traffic included): retransmitted segments, RTO timeouts, drops."""
    counters: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for names, values in zip(lines[::2], lines[1::2]):
            for name, value in zip(names.split()[1:], values.split()[1:]):
                counters[name] = int(value)
    return {k: counters.get(k, 0) for k in ("RetransSegs", "TCPTimeouts", "TCPRcvQDrop", "TCPMemoryPressures")}


def ftpServer(root: str, password: str, logDir: Path) -> bench.Server:
    port = bench.freePort()
    argv = [bench.PYTHON, str(bench.SERVERS / "ftp_server.py"), str(port), root, password, str(logDir / "ftp.log")]
    return bench.startServer("pyftpdlib", argv, {"files": port}, log=logDir / "ftp_server.out")


def benchDownloads(args, results: dict, logDir: Path) -> None:
    try:
        import pyftpdlib  # noqa: F401
    except ImportError:
        raise SystemExit("the downloads benchmark needs pyftpdlib (pip install -e '.[bench]')") from None
    samples = results.setdefault("downloads", [])
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    try:
        bench.makeFile(Path(root) / NAME, SIZE)
        servers = [bench.echofileServer(root, password, logDir), ftpServer(root, password, logDir)]
        try:
            for rep in range(1 if args.quick else args.reps):
                for count in [COUNT] if args.quick else [COUNT, SMALL_COUNT]:
                    for server in bench.rotated(servers, rep):
                        samples.append(_download(server, count, password, rep))
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    printRatios(results)


def _download(server: bench.Server, count: int, password: str, rep: int) -> dict:
    kind = "ftp" if server.name == "pyftpdlib" else "echofile"
    cpu0, trouble0 = server.cpuSeconds(), tcpTrouble()
    r = bench.client([bench.PYTHON, str(bench.HERE / "downloadclient.py"), kind,
                      str(server.ports["files"]), password, NAME, str(count)])
    cpu = server.cpuSeconds() - cpu0
    trouble = {k: v - trouble0[k] for k, v in tcpTrouble().items()}
    assert r["downloads"] == count and r["sizes"] == [SIZE], r
    sample = {
        "server": server.name, "rep": rep, "count": count, "size": SIZE,
        "mbps": r["bytes"] / r["seconds"] / 1e6, "p50_s": r["p50_s"], "p99_s": r["p99_s"],
        "server_cpu_per_gib": cpu / (r["bytes"] / bench.GiB),
        "server_busy": cpu / (r["seconds"] + r["setup_s"]),
        "client_busy": r["client_cpu"] / r["seconds"],
        "client_cpu_per_gib": r["client_cpu"] / (r["bytes"] / bench.GiB),
        "retransmits": trouble["RetransSegs"], "rto_timeouts": trouble["TCPTimeouts"],
        "drops": trouble["TCPRcvQDrop"], "memory_pressures": trouble["TCPMemoryPressures"],
    }
    bench.progress(
        f"downloads {server.name:16} {count} x {SIZE // bench.MiB} MiB: {sample['mbps']:6.0f} MB/s, "
        f"p50 {r['p50_s']:.2f} s p99 {r['p99_s']:.2f} s, server {sample['server_cpu_per_gib']:.3f} "
        f"CPU-s/GiB (core {sample['server_busy']:.0%} busy), client {sample['client_cpu_per_gib']:.3f} CPU-s/GiB "
        f"(core {sample['client_busy']:.0%} busy); TCP: {trouble['RetransSegs']} retransmits, "
        f"{trouble['TCPTimeouts']} RTO timeouts, {trouble['TCPRcvQDrop']} drops, "
        f"{trouble['TCPMemoryPressures']} memory pressures")
    return sample


KEYS = ("mbps", "p50_s", "p99_s", "server_cpu_per_gib", "server_busy", "client_busy", "client_cpu_per_gib",
        "retransmits", "rto_timeouts", "drops")


def _medians(samples: list[dict]) -> dict[tuple, dict[str, float]]:
    return {(count, name): {k: bench.median([s[k] for s in ss]) for k in KEYS}
            for (count, name), ss in bench.group(samples, "count", "server").items()}


def printRatios(results: dict) -> None:
    meds = _medians(results.get("downloads", []))
    for count in sorted({count for count, _ in meds}, reverse=True):
        ours, ftp = meds.get((count, "echofile")), meds.get((count, "pyftpdlib"))
        if not ours or not ftp:
            continue
        bench.progress(f"downloads ratio echofile / pyftpdlib, {count} x {SIZE // bench.MiB} MiB: "
                       f"{ours['mbps'] / ftp['mbps']:.2f}x MB/s, {ftp['p99_s'] / ours['p99_s']:.2f}x p99 "
                       f"(pyftpdlib's / echofile's), {ftp['server_cpu_per_gib'] / ours['server_cpu_per_gib']:.2f}x "
                       f"CPU per GiB (pyftpdlib's / echofile's)")
        busiest = max(ours["client_busy"], ftp["client_busy"])
        if busiest > CLIENT_BOUND:
            bench.progress(f"downloads: the client's core was {busiest:.0%} busy: client-bound, compare the CPU per GiB")
        # The one client core takes about 1 / (its CPU-s per GiB) GiB/s; a server that could send faster is not measured.
        ceiling = 1 / max(ours["client_cpu_per_gib"], ftp["client_cpu_per_gib"])
        for name, m in (("echofile", ours), ("pyftpdlib", ftp)):
            if 1 / m["server_cpu_per_gib"] > ceiling:
                bench.progress(f"downloads: {name}'s core could send about {1 / m['server_cpu_per_gib']:.1f} GiB/s, more "
                               f"than the client core takes (about {ceiling:.1f} GiB/s): MB/s cannot show more than that")
        if ours["rto_timeouts"] or ftp["rto_timeouts"]:
            bench.progress("downloads: TCP retransmission timeouts during the runs (loopback under memory pressure, or "
                           "other traffic): the p99 includes the kernel's loss recovery")


def report(results: dict) -> list[str]:
    if "downloads" not in results:
        return []
    meds = _medians(results["downloads"])
    lines = ["", f"## Concurrent downloads of a {SIZE // bench.MiB} MiB file (cached)", "",
             "| downloads | server | aggregate MB/s | p50 completion s | p99 completion s | server CPU-s per GiB | "
             "server core busy | client CPU-s per GiB | client core busy | TCP retransmits / RTO timeouts | "
             "echofile / this (MB/s) | this / echofile (p99) | this / echofile (CPU) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (count, name), m in sorted(meds.items(), key=lambda kv: (-kv[0][0], kv[0][1] != "echofile")):
        ours = meds.get((count, "echofile"))
        ratio = ours["mbps"] / m["mbps"] if ours else float("nan")
        p99 = m["p99_s"] / ours["p99_s"] if ours else float("nan")
        cost = m["server_cpu_per_gib"] / ours["server_cpu_per_gib"] if ours else float("nan")
        lines.append(f"| {count:,} | {name} | {m['mbps']:,.0f} | {m['p50_s']:.2f} | {m['p99_s']:.2f} | "
                     f"{m['server_cpu_per_gib']:.3f} | {m['server_busy']:.0%} | {m['client_cpu_per_gib']:.3f} | "
                     f"{m['client_busy']:.0%} | {m['retransmits']:,.0f} / {m['rto_timeouts']:,.0f} | "
                     f"{ratio:.2f} | {p99:.2f} | {cost:.2f} |")
    return lines
