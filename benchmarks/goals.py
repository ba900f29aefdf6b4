"""
Every ratio the performance issues (15 and 16) set a goal for, from one
run's results, next to its goal: the table ``run.py`` prints first, so one
``python benchmarks/run.py --quick`` answers "where do we stand?".

A row whose section did not run is left out; a ratio that the run could not
compute (a server missing) shows ``-``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import run as bench


@dataclass(frozen=True)
class Goal:
    what: str
    ratio: float
    #: The goal, as text, and the test of it: higher ratios are better unless C{atMost}.
    target: float
    atMost: bool = False
    #: How the ratio is read (C{a / b} of which figure).
    reading: str = ""

    def met(self) -> str:
        if self.ratio != self.ratio:  # NaN: not computed
            return "-"
        ok = self.ratio <= self.target if self.atMost else self.ratio >= self.target
        return "yes" if ok else "**no**"

    def row(self) -> str:
        shown = "-" if self.ratio != self.ratio else f"{self.ratio:.2f}"
        bound = f"{'<=' if self.atMost else '>='} {self.target:g}"
        return f"| {self.what} | {shown} | {bound} | {self.met()} | {self.reading} |"


def _med(samples: list[dict], key: str, **where: object) -> float:
    return bench.median([s[key] for s in samples if all(s.get(k) == v for k, v in where.items())])


def _echo(r: dict) -> list[Goal]:
    ss = r["echo"]
    ours = _med(ss, "rps", server="echofile", connections=100, size=1024)
    ref = _med(ss, "rps", server="twisted-minimal", connections=100, size=1024)
    return [Goal("echo 100 x 1 KiB, req/s against the minimal Twisted echo", ours / ref, 1.6,
                 reading="echofile / twisted-minimal")]


def _file(r: dict) -> list[Goal]:
    ss = r["file"]
    size = max(s["size"] for s in ss)
    ours, ref = _med(ss, "mbps", server="echofile", size=size), _med(ss, "mbps", server="plain-sendfile", size=size)
    return [Goal(f"FILE {size // bench.MiB} MiB over TCP, MB/s against a blocking sendfile server", ours / ref, 0.9,
                 reading="echofile / plain-sendfile")]


def _tls(r: dict) -> list[Goal]:
    ss = r["tls"]
    size = max(s["size"] for s in ss)
    mb = _med(ss, "mbps", server="echofile-tls", size=size) / _med(ss, "mbps", server="plain-python-ssl", size=size)
    cpu = (_med(ss, "cpu_per_gib", server="plain-python-ssl", size=size)
           / _med(ss, "cpu_per_gib", server="echofile-tls", size=size))
    return [Goal("FILE over TLS, MB/s against a blocking Python ssl server", mb, 0.9,
                 reading="echofile / reference (median MB/s)"),
            Goal("FILE over TLS, CPU per GiB against the same", cpu, 0.9,
                 reading="reference's CPU-s/GiB / echofile's")]


def _scale(r: dict) -> list[Goal]:
    ss = r["scale"]
    files = {k: _med(ss, k, server="echofile", mode="files") for k in
             ("connect_s", "cpu_us_per_session", "conns_per_s", "bytes_per_session")}
    goals = []
    for ref, mode in (("twisted-minimal", "echo"), ("twisted-greeter", "files")):
        other = {k: _med(ss, k, server=ref, mode=mode) for k in ("connect_s", "cpu_us_per_session", "conns_per_s")}
        goals += [
            Goal(f"10,000 files sessions ready, time against {ref}", files["connect_s"] / other["connect_s"], 2,
                 atMost=True, reading="echofile / reference (s)"),
            Goal(f"server CPU per files session against {ref}",
                 files["cpu_us_per_session"] / other["cpu_us_per_session"], 2, atMost=True,
                 reading="echofile / reference (CPU-µs)"),
            Goal(f"burst of 2,000 connects, conn/s against {ref}", other["conns_per_s"] / files["conns_per_s"], 2,
                 atMost=True, reading="reference / echofile (conn/s): times slower"),
        ]
    goals.append(Goal("idle files session, server memory (KB)", files["bytes_per_session"] / 1000, 3, atMost=True,
                      reading="KB per session, not a ratio"))
    return goals


def _handshakes(r: dict) -> list[Goal]:
    ss = r["handshakes"]
    goals = []
    for resumed in (False, True):
        kind = "resumed" if resumed else "full"
        for conns in sorted({s["connections"] for s in ss}):
            where = dict(connections=conns, resumed=resumed)
            hps = _med(ss, "hps", server="echofile-tls", **where) / _med(ss, "hps", server="openssl-s_server", **where)
            cpu = (_med(ss, "server_cpu_us", server="openssl-s_server", **where)
                   / _med(ss, "server_cpu_us", server="echofile-tls", **where))
            goals += [Goal(f"TLS handshakes ({kind}, {conns} in flight), per s against openssl s_server", hps, 0.9,
                           reading="echofile / s_server (\"near 1\")"),
                      Goal(f"TLS handshakes ({kind}, {conns} in flight), CPU against openssl s_server", cpu, 0.9,
                           reading="s_server's CPU-µs / echofile's")]
    return goals


def _fanout(r: dict) -> list[Goal]:
    ss = r["fanout"]
    goals = []
    for count in sorted({s["receivers"] for s in ss}):
        ours = _med(ss, "p50_us", server="echofile", receivers=count)
        goals += [Goal(f"chat fan-out to {count:,}, round p50 against ngircd",
                       _med(ss, "p50_us", server="ngircd", receivers=count) / ours, 1.0,
                       reading="ngircd p50 / echofile p50"),
                  Goal(f"chat fan-out to {count:,}, echofile's p99 / its p50",
                       _med(ss, "p99_us", server="echofile", receivers=count) / ours, 1.5, atMost=True,
                       reading="echofile p99 / p50")]
    return goals


def _downloads(r: dict) -> list[Goal]:
    ss = r["downloads"]
    goals = []
    for count in sorted({s["count"] for s in ss}, reverse=True):
        ours, ftp = _med(ss, "mbps", server="echofile", count=count), _med(ss, "mbps", server="pyftpdlib", count=count)
        cpu = _med(ss, "server_cpu_per_gib", server="pyftpdlib", count=count) / _med(
            ss, "server_cpu_per_gib", server="echofile", count=count)
        goals += [Goal(f"{count:,} concurrent 10 MiB downloads, MB/s against pyftpdlib", ours / ftp, 1.0,
                       reading="echofile / pyftpdlib (no goal set: a reference figure)"),
                  Goal(f"{count:,} concurrent 10 MiB downloads, CPU per GiB against pyftpdlib", cpu, 1.0,
                       reading="pyftpdlib's CPU-s/GiB / echofile's")]
    return goals


def _metrics(r: dict) -> list[Goal]:
    goals = []
    for test in sorted({s["test"] for s in r["metrics"]}):
        on = _med(r["metrics"], "value", server="echofile+metrics", test=test)
        off = _med(r["metrics"], "value", server="echofile", test=test)
        twin = _med(r["metrics"], "value", server="echofile (twin)", test=test)
        goals.append(Goal(f"--metrics on against off, {test}", on / off, 0.97,
                          reading=f"on / off (medians); two servers without --metrics: {twin / off:.2f}"))
    for sample in r.get("metrics_idle", []):
        goals.append(Goal("--metrics by itself, bound from its idle CPU", 1 - sample["scraped_cpu_ms_per_s"] / 1e3,
                          0.97, reading="1 - its CPU share when scraped every second"))
    return goals


SECTIONS: dict[str, Callable[[dict], list[Goal]]] = {
    "echo": _echo, "file": _file, "tls": _tls, "scale": _scale, "handshakes": _handshakes, "fanout": _fanout,
    "downloads": _downloads, "metrics": _metrics,
}


def goals(results: dict) -> list[Goal]:
    found: list[Goal] = []
    for key, section in SECTIONS.items():
        if results.get(key):
            try:
                found += section(results)
            except (KeyError, ValueError, ZeroDivisionError) as e:  # a section cut short: say so, keep the rest
                found.append(Goal(f"{key}: could not compute ({e!r})", float("nan"), 0))
    return found


def report(results: dict) -> list[str]:
    rows = goals(results)
    if not rows:
        return []
    return ["", "## The goals (issues 15 and 16) in this run", "",
            "| figure | measured | goal | met | how it is read |", "|---|---:|---|---|---|",
            *(goal.row() for goal in rows)]


def plot(results: dict, path) -> None:
    """One bar per goal, scaled so that 1.0 is the goal and longer is better (matplotlib, headless)."""
    rows = [g for g in goals(results) if g.ratio == g.ratio and g.target]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [(g.target / g.ratio if g.atMost else g.ratio / g.target) for g in rows]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.2))
    ax.barh(range(len(rows)), scores, color=["tab:green" if s >= 1 else "tab:red" for s in scores])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), [g.what for g in rows], fontsize=7)
    ax.invert_yaxis()
    for i, g in enumerate(rows):
        ax.text(scores[i], i, f" {g.ratio:.2f} ({'<=' if g.atMost else '>='} {g.target:g})", va="center", fontsize=7)
    ax.set_xlabel("measured against its goal (1.0 = the goal; right of the line = met)")
    ax.set_title(f"echofile: the goals of issues 15 and 16 ({results['meta']['date'][:10]}, commit "
                 f"{results['meta']['commit']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
