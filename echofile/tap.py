"""
``twistd echofile``: command-line options and the service tree.

L{makeService} takes the reactor as a parameter so that tests can build the
whole service on a L{twisted.internet.testing.MemoryReactorClock}.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping

from twisted.application import strports
from twisted.application.internet import UDPServer
from twisted.application.service import IService, MultiService
from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted import __version__ as twistedVersion
from twisted.python import usage

from echofile import __version__
from echofile.addresses import LOOPBACK, parseNetwork
from echofile.auth import DEFAULT_USER, PASSWORD_ENVIRONMENT_VARIABLE, defaultPassword, makePortal
from echofile.chat import ChatService
from echofile.echo import DEFAULT_UDP_RATE, EchoDatagramProtocol, EchoFactory
from echofile.redischat import RedisChat, parseRedisURL
from echofile.redispenalties import RedisPenalties
from echofile.files import FilesFactory
from echofile.hashing import FileHasher
from echofile.limits import ConnectionLimiter
from echofile.lockout import LoginPenalties, parseExempt
from echofile.metrics import ReactorLagProbe
from echofile.share import Tree
from echofile.shutdown import GracefulShutdown
from echofile.status import AfterDrain, makeStatusSite

DEFAULT_ECHO = "tcp:8007:interface=127.0.0.1"
DEFAULT_FILES = "tcp:8008:interface=127.0.0.1"

_log = Logger()


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
        ["hash-jobs", None, 2, "HASH digests computed at once, server-wide; more wait in turn.", _positive(int, "hash-jobs")],
        ["hash-cache", None, 1024, "HASH digests remembered (per unchanged file).", _nonNegativeInt("hash-cache")],
        ["metrics", None, None, "Serve /metrics (Prometheus) and /healthz on this endpoint, e.g. tcp:9108:interface=127.0.0.1. Off by default."],
        ["cluster", None, None, "Share chat with the other instances that use this Redis: redis://HOST:PORT[/DB]. Off by default."],
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


def makeService(config: Mapping[str, Any], reactor: Any = None, environ: Mapping[str, str] | None = None) -> MultiService:
    """
    Build the service tree: one listening service per endpoint, plus UDP echo
    when asked for.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    _log.info("echofile {version} starting (Twisted {twisted})", version=__version__, twisted=twistedVersion)
    password = _guestPassword(config, os.environ if environ is None else environ)

    top = MultiService()
    limits = dict(
        maxFailures=config["lockout-failures"],
        window=config["lockout-window"],
        duration=config["lockout-duration"],
        exempt=config["lockout-exempt"],
    )
    chat: ChatService | RedisChat
    penalties: LoginPenalties
    if config.get("cluster") is None:
        chat = ChatService()
        penalties = LoginPenalties(reactor, **limits)
    else:
        chat = RedisChat(config["cluster"], reactor)
        penalties = RedisPenalties(config["cluster"], reactor, **limits)
        penalties.setServiceParent(top)
    chat.setServiceParent(top)
    trustedProxies = config.get("trusted-proxy") or LOOPBACK
    hashJobs = config.get("hash-jobs", 2)
    hashes = FileHasher(
        lambda function: deferToThreadPool(reactor, reactor.getThreadPool(), function),
        maxJobs=hashJobs,
        cacheSize=config.get("hash-cache", 1024),
    )
    hashes.setServiceParent(top)
    _roomInThreadPool(reactor, hashJobs)
    echoFactory = EchoFactory(
        reactor,
        ConnectionLimiter(config["max-connections"], config["max-per-ip"], "echo"),
        config["idle-timeout"],
        readyTimeout=config["login-timeout"],
        trustedProxies=trustedProxies,
    )
    tree = Tree(
        config["root"],
        dotfiles=bool(config.get("dotfiles")),
        runInThread=lambda f, *args: deferToThreadPool(reactor, reactor.getThreadPool(), f, *args),
        clock=reactor,
    )
    filesFactory = FilesFactory(
        makePortal(tree, password, config.get("credCheckers", []), chat),
        reactor,
        ConnectionLimiter(config["max-connections"], config["max-per-ip"], "files"),
        chat,
        idleTimeout=config["idle-timeout"],
        maxLine=config["max-line"],
        loginTimeout=config["login-timeout"],
        penalties=penalties,
        trustedProxies=trustedProxies,
        hashes=hashes,
    )
    for description in config["echo"]:
        _listen(description, echoFactory, reactor).setServiceParent(top)
    for description in config["files"]:
        _listen(description, filesFactory, reactor).setServiceParent(top)
    shutdown = GracefulShutdown(
        [echoFactory.sessions, filesFactory.sessions],
        reactor,
        config.get("drain-timeout", 10.0),
        callFromThread=getattr(reactor, "callFromThread", None),
    )
    shutdown.setServiceParent(top)
    if config.get("metrics") is not None:
        status = AfterDrain(shutdown.whenDrained)  # /healthz answers 503 until the drain is over
        _listen(config["metrics"], makeStatusSite(lambda: shutdown.draining), reactor).setServiceParent(status)
        status.setServiceParent(top)
        ReactorLagProbe(reactor).setServiceParent(top)
    if config.get("echo-udp") is not None:
        host, port = config["echo-udp"]
        # Twisted reads at most 8192 bytes per datagram unless told: allow any UDP payload.
        protocol = EchoDatagramProtocol(reactor, rate=config.get("echo-udp-rate", DEFAULT_UDP_RATE))
        udp = UDPServer(port, protocol, interface=host, maxPacketSize=65535, reactor=reactor)
        udp.setServiceParent(top)
    _log.info(
        "Serving files from {root} ({dotfiles})", root=config["root"],
        dotfiles="dotfiles served" if tree.dotfiles else "names starting with '.' hidden",
    )
    return top


def _guestPassword(config: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The default account's password (None when --no-guest), and a log line saying where it came from."""
    if config.get("no-guest"):
        _log.info("Account {user!r} is off (--no-guest): only --auth accounts can log in", user=DEFAULT_USER)
        return None
    password, generated = defaultPassword(environ)
    if generated:
        _log.info(
            "No {variable} set: the password of account {user!r} for this run is {password}",
            variable=PASSWORD_ENVIRONMENT_VARIABLE, user=DEFAULT_USER, password=password,
        )
    else:
        _log.info("Account {user!r} takes its password from {variable}", user=DEFAULT_USER, variable=PASSWORD_ENVIRONMENT_VARIABLE)
    return password


#: Threads of the reactor's pool kept free of HASH jobs (for bcrypt checks).
THREADS_BESIDES_HASHES = 4


def _roomInThreadPool(reactor: Any, hashJobs: int) -> None:
    """HASH jobs share the reactor's thread pool (10 threads) with bcrypt checks: a big --hash-jobs grows it."""
    getThreadPool = getattr(reactor, "getThreadPool", None)
    if getThreadPool is not None and getThreadPool().max < hashJobs + THREADS_BESIDES_HASHES:
        reactor.suggestThreadPoolSize(hashJobs + THREADS_BESIDES_HASHES)


def _listen(description: str, factory: Any, reactor: Any) -> IService:
    return strports.service(description, factory, reactor=reactor)
