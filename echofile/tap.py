"""
``twistd echofile``: command-line options and the service tree.

L{makeService} takes the reactor as a parameter so that tests can build the
whole service on a L{twisted.internet.testing.MemoryReactorClock}.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from twisted.application import strports
from twisted.application.internet import UDPServer
from twisted.application.service import IService, MultiService
from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from echofile.auth import DEFAULT_USER, PASSWORD_ENVIRONMENT_VARIABLE, defaultPassword, makePortal
from echofile.chat import ChatService
from echofile.redischat import RedisChat, parseRedisURL
from echofile.redispenalties import RedisPenalties
from echofile.echo import EchoDatagramProtocol, EchoFactory
from echofile.files import FilesFactory
from echofile.limits import ConnectionLimiter
from echofile.lockout import LoginPenalties, parseExempt
from echofile.shutdown import GracefulShutdown

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
        "else a random one is generated and logged once at start-up."
    )
    supportedInterfaces = [IUsernamePassword]

    optParameters = [
        ["echo-udp", None, None, "Also serve echo over UDP on [HOST:]PORT (host defaults to 127.0.0.1). Off by default."],
        ["root", None, ".", "Folder to serve files from (default: the current folder)."],
        ["idle-timeout", None, 300.0, "Close sessions idle for this many seconds.", _positive(float, "idle-timeout")],
        ["max-line", None, 4096, "Longest command line accepted, in bytes.", _positive(int, "max-line")],
        ["max-connections", None, 1000, "Most connections at once, per service.", _positive(int, "max-connections")],
        ["max-per-ip", None, 50, "Most connections at once from one address, per service.", _positive(int, "max-per-ip")],
        ["login-timeout", None, 60.0, "Close sessions not logged in after this many seconds.", _positive(float, "login-timeout")],
        ["lockout-failures", None, 10, "Failed AUTHs from one address (within --lockout-window) that lock it out.", _nonNegativeInt("lockout-failures")],
        ["lockout-window", None, 600.0, "Seconds over which failed AUTHs are counted.", _positive(float, "lockout-window")],
        ["lockout-duration", None, 600.0, "Seconds a locked-out address is refused AUTH.", _positive(float, "lockout-duration")],
        ["drain-timeout", None, 10.0, "On shutdown, seconds transfers in flight get to finish.", _positive(float, "drain-timeout")],
        ["cluster", None, None, "Share chat with the other instances that use this Redis: redis://HOST:PORT[/DB]. Off by default."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["echo"] = []
        self["files"] = []
        self["lockout-exempt"] = []

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

    def postOptions(self) -> None:
        if not self["echo"]:
            self["echo"] = [DEFAULT_ECHO]
        if not self["files"]:
            self["files"] = [DEFAULT_FILES]
        if self["echo-udp"] is not None:
            self["echo-udp"] = parseUDPAddress(self["echo-udp"])
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
    password, generated = defaultPassword(os.environ if environ is None else environ)
    if generated:
        _log.info(
            "No {variable} set: the password of account {user!r} for this run is {password}",
            variable=PASSWORD_ENVIRONMENT_VARIABLE, user=DEFAULT_USER, password=password,
        )

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
    echoFactory = EchoFactory(
        reactor,
        ConnectionLimiter(config["max-connections"], config["max-per-ip"], "echo"),
        config["idle-timeout"],
    )
    filesFactory = FilesFactory(
        makePortal(config["root"], password, config.get("credCheckers", []), chat),
        reactor,
        ConnectionLimiter(config["max-connections"], config["max-per-ip"], "files"),
        chat,
        idleTimeout=config["idle-timeout"],
        maxLine=config["max-line"],
        loginTimeout=config["login-timeout"],
        penalties=penalties,
    )
    for description in config["echo"]:
        _listen(description, echoFactory, reactor).setServiceParent(top)
    for description in config["files"]:
        _listen(description, filesFactory, reactor).setServiceParent(top)
    GracefulShutdown(
        [echoFactory.sessions, filesFactory.sessions],
        reactor,
        config.get("drain-timeout", 10.0),
        callFromThread=getattr(reactor, "callFromThread", None),
    ).setServiceParent(top)
    if config.get("echo-udp") is not None:
        host, port = config["echo-udp"]
        # Twisted reads at most 8192 bytes per datagram unless told: allow any UDP payload.
        udp = UDPServer(port, EchoDatagramProtocol(), interface=host, maxPacketSize=65535, reactor=reactor)
        udp.setServiceParent(top)
    _log.info("Serving files from {root}", root=config["root"])
    return top


def _listen(description: str, factory: Any, reactor: Any) -> IService:
    return strports.service(description, factory, reactor=reactor)
