"""
The ``hash`` and ``resume`` sections of benchmarks/run.py (issue #12).

- hash: HASH of a cached 1 GiB file against ``openssl dgst -sha256`` of the
  same file on the same (pinned) core; a second HASH of it (cache hit);
  echo latency p99 on the same server, idle and while 2 HASH jobs run.
- resume: RESUME of the last 10 % of a 1 GiB file against FILE of all of
  it: bytes that came off the socket and MB/s of the body.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import run
from run import GiB, HERE, PYTHON, client, median, progress

NAME = "big.bin"
SMALL = "tenth.bin"


def hashServer(root: str, password: str, logDir: Path, *extra: str) -> run.Server:
    echo, files = run.freePort(), run.freePort()
    argv = [
        PYTHON, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "--reactor=epoll", f"--logfile={logDir / 'twistd-hash.log'}",
        "echofile", f"--echo=tcp:{echo}:interface=127.0.0.1", f"--files=tcp:{files}:interface=127.0.0.1",
        f"--root={root}", "--idle-timeout=3600", *extra,
    ]
    return run.startServer("echofile", argv, {"echo": echo, "files": files},
                           env={"ECHOFILE_PASSWORD": password}, cwd=root, log=logDir / "echofile-hash.out")


def opensslSeconds(path: Path) -> tuple[float, str]:
    """One ``openssl dgst -sha256`` run on the server's core: seconds and the digest."""
    started = time.perf_counter()
    done = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(path)], capture_output=True, text=True,
                          check=True, preexec_fn=run._preexec(run.SERVER_CPUS))
    return time.perf_counter() - started, done.stdout.split()[0]


def hashclient(*argv: str, timeout: float = 600) -> dict:
    return client([PYTHON, str(HERE / "hashclient.py"), *argv], timeout=timeout)


def benchHash(args, results: dict, logDir: Path) -> None:
    size = GiB
    reps = max(3, args.reps)
    samples = results.setdefault("hash", [])
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    path = Path(root) / NAME
    try:
        run.makeFile(path, size)
        server = hashServer(root, password, logDir)
        with run.running(server):
            port = str(server.ports["files"])
            for rep in range(reps):
                seconds, reference = opensslSeconds(path)
                samples.append({"kind": "openssl", "rep": rep, "seconds": seconds, "mbps": size / seconds / 1e6})
                r = hashclient("hash", port, password, NAME, "1", str(path))  # touched first: a miss
                assert r["digests"] == [reference + "."], (r, reference)
                samples.append({"kind": "miss", "rep": rep, "seconds": r["seconds"][0],
                                "mbps": size / r["seconds"][0] / 1e6})
                progress(f"hash 1 GiB: openssl {size / seconds / 1e6:6.0f} MB/s, HASH {size / r['seconds'][0] / 1e6:6.0f} MB/s")
            r = hashclient("hash", port, password, NAME, "50")  # the last miss is remembered: 50 hits
            samples.extend({"kind": "hit", "rep": n, "seconds": s} for n, s in enumerate(r["seconds"]))
            progress(f"hash 1 GiB cached: median {median(r['seconds']) * 1e3:.2f} ms, max {max(r['seconds']) * 1e3:.2f} ms")
        # Echo latency while 2 HASH jobs run (cache off, so the jobs keep running for the whole measurement).
        loadgen = run.buildLoadGenerator(logDir)
        server = hashServer(root, password, logDir, "--hash-cache=0")
        with run.running(server):
            port = str(server.ports["files"])
            for rep in range(reps):
                for loaded in (False, True):
                    loops: list[threading.Thread] = []
                    counts: list[dict] = []
                    if loaded:
                        for _ in range(2):
                            t = threading.Thread(target=lambda: counts.append(hashclient("loop", port, password, NAME, "5")))
                            t.start()
                            loops.append(t)
                        time.sleep(0.5)  # both jobs started
                    r = client([str(loadgen), "127.0.0.1", str(server.ports["echo"]), "1", "1024", "0.5", "3"])
                    for t in loops:
                        t.join()
                    samples.append({"kind": "echo-loaded" if loaded else "echo-idle", "rep": rep,
                                    "p50_us": r["p50_us"], "p99_us": r["p99_us"], "requests": r["requests"],
                                    "hashes": sum(c["hashes"] for c in counts)})
                    progress(f"echo 1 x 1 KiB {'while 2 HASH jobs run' if loaded else 'idle':22}: p50 {r['p50_us']:.0f} us, "
                             f"p99 {r['p99_us']:.0f} us" + (f" ({sum(c['hashes'] for c in counts)} HASHes of 1 GiB)" if loaded else ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def benchResume(args, results: dict, logDir: Path) -> None:
    size = GiB
    offset = size - size // 10
    reps = max(3, args.reps)
    samples = results.setdefault("resume", [])
    password = secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    try:
        run.makeFile(Path(root) / NAME, size)
        run.makeFile(Path(root) / SMALL, size - offset)  # FILE of as many bytes as the RESUME sends
        server = hashServer(root, password, logDir)
        with run.running(server):
            port = str(server.ports["files"])
            for rep in range(reps):
                plan = [("FILE", NAME, -1, 1), ("FILE-same-size", SMALL, -1, 10), ("RESUME", NAME, offset, 10)]
                for kind, name, at, repeats in run.rotated(plan, rep):
                    r = hashclient("resume", port, password, name, str(at), str(repeats))
                    body = r["body_bytes"][0]
                    mbps = body * repeats / sum(r["seconds"]) / 1e6
                    samples.append({"kind": kind, "rep": rep, "mbps": mbps, "wire_bytes": r["wire_bytes"][0],
                                    "body_bytes": body})
                    what = {"FILE": "FILE of 1 GiB", "FILE-same-size": "FILE of a 10 % file", "RESUME": "RESUME last 10 %"}[kind]
                    progress(f"{what:20}: {mbps:6.0f} MB/s, "
                             f"{r['wire_bytes'][0]:,} bytes on the wire ({r['wire_bytes'][0] / size:.4f} of the file)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict) -> list[str]:
    lines: list[str] = []
    if "hash" in results:
        ss = results["hash"]

        def of(kind: str, key: str) -> list[float]:
            return [s[key] for s in ss if s["kind"] == kind]

        openssl, miss, hits = median(of("openssl", "mbps")), median(of("miss", "mbps")), of("hit", "seconds")
        idle, loaded = median(of("echo-idle", "p99_us")), median(of("echo-loaded", "p99_us"))
        lines += ["", "## HASH (1 GiB, in the page cache)", "",
                  "| measure | value | goal |", "|---|---:|---|",
                  f"| openssl dgst -sha256, same core | {openssl:,.0f} MB/s | |",
                  f"| HASH, cache miss | {miss:,.0f} MB/s | |",
                  f"| HASH / openssl | {miss / openssl:.2f} | >= 0.8 |",
                  f"| HASH, cache hit (median / max of {len(hits)}) | {median(hits) * 1e3:.2f} / {max(hits) * 1e3:.2f} ms | < 5 ms |",
                  f"| echo p99, idle server | {idle / 1e3:.2f} ms | |",
                  f"| echo p99 while 2 HASH jobs run | {loaded / 1e3:.2f} ms | < 10 ms |"]
    if "resume" in results:
        ss = results["resume"]
        file = [s for s in ss if s["kind"] == "FILE"]
        same = [s for s in ss if s["kind"] == "FILE-same-size"]
        resume = [s for s in ss if s["kind"] == "RESUME"]
        fileMbps, resumeMbps = median([s["mbps"] for s in file]), median([s["mbps"] for s in resume])
        sameMbps = median([s["mbps"] for s in same])
        lines += ["", "## RESUME of the last 10 % of 1 GiB", "",
                  "| command | body bytes | bytes on the wire | MB/s |", "|---|---:|---:|---:|",
                  f"| FILE of 1 GiB | {file[0]['body_bytes']:,} | {file[0]['wire_bytes']:,} | {fileMbps:,.0f} |",
                  f"| FILE of a file of 10 % the size | {same[0]['body_bytes']:,} | {same[0]['wire_bytes']:,} | {sameMbps:,.0f} |",
                  f"| RESUME of the last 10 % | {resume[0]['body_bytes']:,} | {resume[0]['wire_bytes']:,} | {resumeMbps:,.0f} |",
                  "", f"RESUME moves {resume[0]['wire_bytes'] / file[0]['wire_bytes']:.4f} of FILE's bytes, "
                  f"at {resumeMbps / sameMbps:.2f}x the throughput of FILE of as many bytes "
                  f"({resumeMbps / fileMbps:.2f}x FILE of the whole 1 GiB)."]
    return lines

