"""
``twistd echofile``'s command line: every option, its default and its check
(a bad value is a usage error naming the option, before anything starts).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from echofile.addresses import LOOPBACK, parseNetwork
from echofile.auth import DEFAULT_USER, PASSWORD_ENVIRONMENT_VARIABLE
from echofile.echo import DEFAULT_UDP_RATE
from echofile.eventlog import SESSION_LOG_LIMIT
from echofile.lockout import parseExempt
from echofile.redischat import parseRedisURL

DEFAULT_ECHO = "tcp:8007:interface=127.0.0.1"
DEFAULT_FILES = "tcp:8008:interface=127.0.0.1"

def _positive(kind: Callable[[str], float | int], option: str) -> Callable[[str], Any]:
    """A coerce function for usage.Options that names the option in its error."""

    def coerce(value: str) -> float | int:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"--{option} must be a positive number, not {value!r}") from None
        if not number > 0 or number != number or number == float("inf"):
            raise ValueError(f"--{option} must be a positive number, not {value!r}")
        return number

    coerce.coerceDoc = "Must be positive."  # type: ignore[attr-defined]
    return coerce


def _nonNegativeInt(option: str) -> Callable[[str], int]:
    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = -1
        if number < 0:
            raise ValueError(f"--{option} must be a whole number >= 0, not {value!r}")
        return number

    coerce.coerceDoc = "0 turns it off."  # type: ignore[attr-defined]
    return coerce


def parseUDPAddress(value: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (or ``[V6ADDR]:PORT``) to (host, port); the host defaults to loopback."""
    host, separator, port = value.rpartition(":")
    if not separator:
        host = "127.0.0.1"
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise usage.UsageError(f"--echo-udp must be [HOST:]PORT, not {value!r}") from None
    if not 0 <= number <= 65535:
        raise usage.UsageError(f"--echo-udp port out of range: {value!r}")
    return host, number


class Options(usage.Options, strcred.AuthOptionMixin):
    """Options of ``twistd echofile``."""

    synopsis = "[options]"
    longdesc = (
        "Serve RFC 862 echo and the echofile file/chat protocol. Both listen on "
        "loopback by default; open them wider with endpoint strings. The default "
        f"account '{DEFAULT_USER}' takes its password from {PASSWORD_ENVIRONMENT_VARIABLE}, "
        "else a random one is generated and logged once at start-up; --no-guest turns it off."
    )
    supportedInterfaces = [IUsernamePassword]

    optFlags = [
        ["no-guest", None, f"Turn the default account '{DEFAULT_USER}' off: only --auth accounts can log in."],
        ["dotfiles", None, "Also serve and list names starting with '.' (.git/, .env, ...): hidden by default."],
    ]

    optParameters = [
        ["echo-udp", None, None, "Also serve echo over UDP on [HOST:]PORT (host defaults to 127.0.0.1). Off by default."],
        ["echo-udp-rate", None, DEFAULT_UDP_RATE, "UDP echo: datagrams per second answered per source address (bursts of as many); 0 turns the limit off.", _nonNegativeInt("echo-udp-rate")],
        ["root", None, ".", "Folder to serve files from (default: the current folder)."],
        ["idle-timeout", None, 300.0, "Close sessions idle for this many seconds.", _positive(float, "idle-timeout")],
        ["max-line", None, 4096, "Longest command line accepted, in bytes.", _positive(int, "max-line")],
        ["max-connections", None, 1000, "Most connections at once, per service.", _positive(int, "max-connections")],
        ["max-per-ip", None, 50, "Most connections at once from one address, per service.", _positive(int, "max-per-ip")],
        ["login-timeout", None, 60.0, "Close sessions not logged in this many seconds after connecting (TLS handshake and PROXY header included).", _positive(float, "login-timeout")],
        ["lockout-failures", None, 10, "Failed AUTHs from one address (within --lockout-window) that lock it out.", _nonNegativeInt("lockout-failures")],
        ["lockout-window", None, 600.0, "Seconds over which failed AUTHs are counted.", _positive(float, "lockout-window")],
        ["lockout-duration", None, 600.0, "Seconds a locked-out address is refused AUTH.", _positive(float, "lockout-duration")],
        ["drain-timeout", None, 10.0, "On shutdown, seconds transfers in flight get to finish.", _positive(float, "drain-timeout")],
        ["log-budget", None, SESSION_LOG_LIMIT, "Log lines one client address may cause per 60 s, per service (then one count); once they are spent its connection lines are counted too.", _positive(int, "log-budget")],
        ["hash-jobs", None, 2, "HASH digests computed at once, server-wide; more wait in turn.", _positive(int, "hash-jobs")],
        ["hash-cache", None, 1024, "HASH digests remembered (per unchanged file).", _nonNegativeInt("hash-cache")],
        ["metrics", None, None, "Serve /metrics (Prometheus) and /healthz on this endpoint, e.g. tcp:9108:interface=127.0.0.1. Off by default."],
        ["cluster", None, None, "Share chat with the other instances that use this Redis: redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB] (the password better in ECHOFILE_CLUSTER_PASSWORD). Off by default."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["echo"] = []
        self["files"] = []
        self["lockout-exempt"] = []
        self["trusted-proxy"] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Under twistd (which sets C{parent}), a usage error is one line and a
        pointer to C{--help} on stderr, not the whole help text first (which
        is what twistd itself prints); used directly, it raises as usual.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            sys.stderr.write(f"twistd echofile: {e}\nRun 'twistd echofile --help' for the options.\n")
            raise SystemExit(2) from None

    def opt_echo(self, description: str) -> None:
        """Endpoint for the echo service (repeatable). Default: tcp:8007:interface=127.0.0.1"""
        self["echo"].append(_checkEndpoint("echo", description))

    def opt_files(self, description: str) -> None:
        """Endpoint for the file service (repeatable). Default: tcp:8008:interface=127.0.0.1"""
        self["files"].append(_checkEndpoint("files", description))

    def opt_lockout_exempt(self, value: str) -> None:
        """Address or network never locked out, e.g. 10.0.0.0/8 (repeatable)."""
        try:
            self["lockout-exempt"].append(parseExempt(value))
        except ValueError:
            raise usage.UsageError(f"--lockout-exempt: not an address or network: {value!r}") from None

    def opt_trusted_proxy(self, value: str) -> None:
        """Address or network whose PROXY headers a haproxy: endpoint believes (repeatable). Default: 127.0.0.0/8 and ::1"""
        try:
            self["trusted-proxy"].append(parseNetwork(value))
        except ValueError:
            raise usage.UsageError(f"--trusted-proxy: not an address or network: {value!r}") from None

    def postOptions(self) -> None:
        if not self["echo"]:
            self["echo"] = [DEFAULT_ECHO]
        if not self["files"]:
            self["files"] = [DEFAULT_FILES]
        if not self["trusted-proxy"]:
            self["trusted-proxy"] = list(LOOPBACK)
        if self["echo-udp"] is not None:
            self["echo-udp"] = parseUDPAddress(self["echo-udp"])
        if self["metrics"] is not None:
            _checkEndpoint("metrics", self["metrics"])
        if self["no-guest"] and not self.get("credCheckers"):
            raise usage.UsageError("--no-guest needs at least one --auth: otherwise nobody could log in")
        root = self["root"]
        if not os.path.isdir(root):
            raise usage.UsageError(f"--root must be an existing folder, not {root!r}")
        self["root"] = os.path.realpath(root)
        if self["cluster"] is not None:
            try:
                parseRedisURL(self["cluster"])
            except ValueError as e:
                raise usage.UsageError(f"--cluster: {e}") from None


def _checkEndpoint(option: str, description: str) -> str:
    """Parse an endpoint string now, so that a typo is a usage error naming the option."""
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise usage.UsageError(f"--{option}: invalid endpoint {description!r}: {e}") from None
    return description
