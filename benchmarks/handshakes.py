"""
TLS handshakes per second (issue 16, goal 3): echofile's ``ssl:`` endpoint
against ``openssl s_server`` on the same key and certificate.

    python benchmarks/run.py --only handshakes [--quick]

Both servers are pinned to the server core and driven by the same load
generator (benchmarks/handshakeclient.py) on the client core: full TLS 1.3
handshakes, and resumed ones (each connection offers the session of the one
before it), one or eight in flight.  A handshake counts when the client has
the server's first line: echofile's greeting, which it sends by itself once
the handshake is done; ``s_server -rev`` answers the ``x`` line the client
sends right after its Finished, in the same flight, so both lines come two
round trips after the connect.  What each server does per connection:

- echofile (``twistd``, epoll reactor, Twisted's test RSA-2048 certificate as
  in run.py's echofileServer): accept, admission (caps, limiter), a
  TLSMemoryBIOProtocol and its OpenSSL Connection, the handshake through the
  memory BIO, a files session and its greeting, two info lines (connection
  from, closed) into twistd's log file.  Session cache on (what
  echofile.tls.resumeSessions turns on): TLS 1.3 stateful tickets.
- ``twisted-tls-greeter`` (benchmarks/servers/twisted_tls_greeter.py):
  Twisted's own TLS layer and the same options, a protocol that writes the
  greeting on handshakeCompleted and does nothing else; it minus s_server
  is Twisted's TLS layer.
- ``greeter+echofile-tls`` (full run only): the same greeter listening as
  echofile does (echofile.tlslayer); echofile minus it is what the files
  session adds, it minus s_server what is left of the TLS layer.
- ``openssl s_server -rev -no_ticket`` (Debian's openssl binary): one
  blocking connection at a time, its default session cache, ``-no_ticket``
  so that its TLS 1.3 tickets are stateful too, as echofile's are; it prints
  a few lines per connection to its stdout (/dev/null here).

Reported: handshakes/s (client clock), p50/p99 connect-to-first-line, and
the server's CPU time per handshake (user + system from /proc, warm-up
included): the figure load does not move much.
"""

from __future__ import annotations

import shutil
import tempfile

import run as bench

#: (connections in flight, resumed?)
FULL_CONFIGS = [(1, False), (8, False), (1, True), (8, True)]
QUICK_CONFIGS = [(1, False), (1, True)]  # one at a time: s_server's own way, like for like


def sServer(logDir) -> bench.Server:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("the handshake benchmark needs the openssl command (Debian: apt-get install openssl)")
    port = bench.freePort()
    pem = bench.testPem()
    argv = [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", pem, "-key", pem,
            "-rev", "-quiet", "-no_ticket"]
    return bench.startServer("openssl-s_server", argv, {"files": port}, log=None)


def greeter(logDir, echofileTLS: bool = False) -> bench.Server:
    port = bench.freePort()
    name = "greeter+echofile-tls" if echofileTLS else "twisted-tls-greeter"
    return bench.startServer(name,
                             [bench.PYTHON, str(bench.SERVERS / "twisted_tls_greeter.py"), str(port), bench.testPem(),
                              *(["echofile-tls"] if echofileTLS else [])],
                             {"files": port}, log=logDir / f"{name}.out")


def benchHandshakes(args, results: dict, logDir) -> None:
    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    warmup, duration = (0.3, 1.2) if args.quick else (0.5, 3.0)
    samples = results.setdefault("handshakes", [])
    root = tempfile.mkdtemp(prefix="echofile-bench-")
    try:
        servers = [bench.echofileServer(root, "unused", logDir, tls=True), sServer(logDir), greeter(logDir)]
        if not args.quick:
            servers.append(greeter(logDir, echofileTLS=True))
        try:
            for rep in range(args.reps):
                for conns, resume in configs:
                    for server in bench.rotated(servers, rep):
                        mode = "rev" if server.name == "openssl-s_server" else "greeting"
                        cpu0 = server.cpuSeconds()
                        r = bench.client([bench.PYTHON, str(bench.HERE / "handshakeclient.py"),
                                          str(server.ports["files"]), mode, str(conns), str(warmup), str(duration),
                                          *(["resume"] if resume else [])])
                        cpu = server.cpuSeconds() - cpu0
                        if resume and r["reused"] != r["handshakes"]:
                            raise RuntimeError(f"{server.name}: only {r['reused']} of {r['handshakes']} resumed")
                        sample = {
                            "server": server.name, "connections": conns, "resumed": resume, "rep": rep,
                            "hps": r["handshakes"] / r["seconds"], "p50_us": r["p50_us"], "p99_us": r["p99_us"],
                            "errors": r["errors"], "server_cpu_us": cpu / max(1, r["all_handshakes"]) * 1e6,
                            "client_cpu_us": r["client_cpu"] / max(1, r["handshakes"]) * 1e6,
                        }
                        samples.append(sample)
                        bench.progress(
                            f"handshakes {server.name:16} {conns} in flight, {'resumed' if resume else 'full':7}: "
                            f"{sample['hps']:7.0f}/s p50 {r['p50_us']:.0f} us p99 {r['p99_us']:.0f} us, "
                            f"server {sample['server_cpu_us']:.0f} CPU-us each, client {sample['client_cpu_us']:.0f}")
        finally:
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    printRatios(results)


def _medians(samples: list[dict]) -> dict[tuple, dict[str, float]]:
    out = {}
    for key, ss in bench.group(samples, "connections", "resumed", "server").items():
        out[key] = {k: bench.median([s[k] for s in ss]) for k in ("hps", "p50_us", "p99_us", "server_cpu_us",
                                                                   "client_cpu_us")}
    return out


def printRatios(results: dict) -> None:
    meds = _medians(results.get("handshakes", []))
    for (conns, resume, name), m in sorted(meds.items()):
        ref = meds.get((conns, resume, "openssl-s_server"))
        if name != "openssl-s_server" and ref:
            bench.progress(f"handshakes ratio {name} / s_server, {conns} in flight, "
                           f"{'resumed' if resume else 'full'}: {m['hps'] / ref['hps']:.2f}x handshakes/s, "
                           f"{ref['server_cpu_us'] / m['server_cpu_us']:.2f}x CPU (s_server's / its)")
        greeter = meds.get((conns, resume, "twisted-tls-greeter"))
        if name == "echofile-tls" and greeter:
            bench.progress(f"handshakes ratio echofile-tls / twisted-tls-greeter, {conns} in flight, "
                           f"{'resumed' if resume else 'full'}: {m['hps'] / greeter['hps']:.2f}x handshakes/s, "
                           f"{greeter['server_cpu_us'] / m['server_cpu_us']:.2f}x CPU (the greeter's / echofile's)")


def report(results: dict) -> list[str]:
    if "handshakes" not in results:
        return []
    lines = ["", "## TLS handshakes (TLS 1.3, RSA 2048; until the server's first line)", "",
             "| in flight | handshake | server | handshakes/s | p50 µs | p99 µs | server CPU µs each | "
             "client CPU µs each | echofile / this (per s) | this / echofile (CPU) |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    meds = _medians(results["handshakes"])
    for (conns, resume, name), m in sorted(meds.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2] != "echofile-tls")):
        ours = meds.get((conns, resume, "echofile-tls"))
        ratio = ours["hps"] / m["hps"] if ours else float("nan")
        cost = m["server_cpu_us"] / ours["server_cpu_us"] if ours else float("nan")
        lines.append(f"| {conns} | {'resumed' if resume else 'full'} | {name} | {m['hps']:,.0f} | {m['p50_us']:.0f} | "
                     f"{m['p99_us']:.0f} | {m['server_cpu_us']:.0f} | {m['client_cpu_us']:.0f} | {ratio:.2f} | "
                     f"{cost:.2f} |")
    return lines
