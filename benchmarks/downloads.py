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
SIZE = 10 * bench.MiB
NAME = "file-10MiB.bin"
#: Client core busy more than this share of the timed part: the figure measures the client.
CLIENT_BOUND = 0.8


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
                for server in bench.rotated(servers, rep):
                    kind = "ftp" if server.name == "pyftpdlib" else "echofile"
                    cpu0 = server.cpuSeconds()
                    r = bench.client([bench.PYTHON, str(bench.HERE / "downloadclient.py"), kind,
                                      str(server.ports["files"]), password, NAME, str(COUNT)])
                    cpu = server.cpuSeconds() - cpu0
                    assert r["downloads"] == COUNT and r["sizes"] == [SIZE], r
                    sample = {
                        "server": server.name, "rep": rep, "count": COUNT, "size": SIZE,
                        "mbps": r["bytes"] / r["seconds"] / 1e6, "p50_s": r["p50_s"], "p99_s": r["p99_s"],
                        "server_cpu_per_gib": cpu / (r["bytes"] / bench.GiB),
                        "server_busy": cpu / (r["seconds"] + r["setup_s"]),
                        "client_busy": r["client_cpu"] / r["seconds"],
                    }
                    samples.append(sample)
                    bench.progress(
                        f"downloads {server.name:16} {COUNT} x {SIZE // bench.MiB} MiB: {sample['mbps']:6.0f} MB/s, "
                        f"p50 {r['p50_s']:.2f} s p99 {r['p99_s']:.2f} s, server {sample['server_cpu_per_gib']:.3f} "
                        f"CPU-s/GiB (core {sample['server_busy']:.0%} busy), client core {sample['client_busy']:.0%}")
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    printRatios(results)


def _medians(samples: list[dict]) -> dict[str, dict[str, float]]:
    return {name: {k: bench.median([s[k] for s in ss]) for k in
                   ("mbps", "p50_s", "p99_s", "server_cpu_per_gib", "server_busy", "client_busy")}
            for (name,), ss in bench.group(samples, "server").items()}


def printRatios(results: dict) -> None:
    meds = _medians(results.get("downloads", []))
    ours, ftp = meds.get("echofile"), meds.get("pyftpdlib")
    if not ours or not ftp:
        return
    bench.progress(f"downloads ratio echofile / pyftpdlib: {ours['mbps'] / ftp['mbps']:.2f}x MB/s, "
                   f"{ftp['p99_s'] / ours['p99_s']:.2f}x p99 (pyftpdlib's / echofile's), "
                   f"{ftp['server_cpu_per_gib'] / ours['server_cpu_per_gib']:.2f}x CPU per GiB (pyftpdlib's / echofile's)")
    busiest = max(ours["client_busy"], ftp["client_busy"])
    if busiest > CLIENT_BOUND:
        bench.progress(f"downloads: the client's core was {busiest:.0%} busy: client-bound, compare the CPU per GiB")


def report(results: dict) -> list[str]:
    if "downloads" not in results:
        return []
    meds = _medians(results["downloads"])
    ours = meds.get("echofile")
    lines = ["", f"## {COUNT:,} concurrent downloads of a {SIZE // bench.MiB} MiB file (cached)", "",
             "| server | aggregate MB/s | p50 completion s | p99 completion s | server CPU-s per GiB | "
             "server core busy | client core busy | echofile / this (MB/s) | this / echofile (p99) | "
             "this / echofile (CPU) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in sorted(meds.items(), key=lambda kv: kv[0] != "echofile"):
        ratio = ours["mbps"] / m["mbps"] if ours else float("nan")
        p99 = m["p99_s"] / ours["p99_s"] if ours else float("nan")
        cost = m["server_cpu_per_gib"] / ours["server_cpu_per_gib"] if ours else float("nan")
        lines.append(f"| {name} | {m['mbps']:,.0f} | {m['p50_s']:.2f} | {m['p99_s']:.2f} | "
                     f"{m['server_cpu_per_gib']:.3f} | {m['server_busy']:.0%} | {m['client_busy']:.0%} | "
                     f"{ratio:.2f} | {p99:.2f} | {cost:.2f} |")
    return lines
