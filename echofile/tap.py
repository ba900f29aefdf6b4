"""
``twistd echofile``: the service tree (the options are L{echofile.options}').

L{makeService} takes the reactor as a parameter so that tests can build the
whole service on a L{twisted.internet.testing.MemoryReactorClock}.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from twisted.application import strports
from twisted.application.internet import UDPServer
from twisted.application.service import IService
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from echofile import __version__
from echofile.addresses import LOOPBACK
from echofile.auth import DEFAULT_USER, PASSWORD_ENVIRONMENT_VARIABLE, defaultPassword
from echofile.chat import ChatService
from echofile.echo import DEFAULT_UDP_RATE, EchoDatagramProtocol
from echofile.hashing import FileHasher
from echofile.listening import withDefaultBacklog
from echofile.lockout import LoginPenalties
from echofile.logformat import FasterTextLog
from echofile.metrics import ReactorLagProbe
from echofile.options import DEFAULT_ECHO, DEFAULT_FILES, Options, parseUDPAddress
from echofile.ownfiles import OwnFiles
from echofile.redischat import RedisChat
from echofile.redislink import parseRedisURL
from echofile.redispenalties import RedisPenalties
from echofile.service import FilesService
from echofile.share import Tree
from echofile.status import AfterDrain, makeStatusSite
from echofile.tls import resumeSessions
from echofile.tlslayer import fasterTLS
from twisted import __version__ as twistedVersion

__all__ = ["DEFAULT_ECHO", "DEFAULT_FILES", "Options", "makeService", "parseUDPAddress"]

_log = Logger()


def makeService(config: Mapping[str, Any], reactor: Any = None, environ: Mapping[str, str] | None = None) -> FilesService:
    """
    Build the service tree: the shared state (L{FilesService}, the top), one
    listening service per endpoint under it, plus UDP echo when asked for.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    _log.info("echofile {version} starting (Twisted {twisted})", version=__version__, twisted=twistedVersion)
    password = _guestPassword(config, os.environ if environ is None else environ)

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
        cluster = parseRedisURL(config["cluster"])  # one read of its ssl_ca_certs file for both
        chat = RedisChat(cluster, reactor)
        penalties = RedisPenalties(cluster, reactor, **limits)
    trustedProxies = config.get("trusted-proxy") or LOOPBACK
    hashJobs = config.get("hash-jobs", 2)
    hashes = FileHasher(
        lambda function: deferToThreadPool(reactor, reactor.getThreadPool(), function),
        maxJobs=hashJobs,
        cacheSize=config.get("hash-cache", 1024),
    )
    _roomInThreadPool(reactor, hashJobs)
    tree = Tree(
        config["root"],
        dotfiles=bool(config.get("dotfiles")),
        ownFiles=OwnFiles(_ownFiles(config)),
        runInThread=lambda f, *args: deferToThreadPool(reactor, reactor.getThreadPool(), f, *args),
        clock=reactor,
    )
    top = FilesService(
        reactor, chat, penalties, hashes, tree, config["max-connections"], config["max-per-ip"],
        drainTimeout=config.get("drain-timeout", 10.0),
    )
    echoFactory = top.makeEchoFactory(
        config["idle-timeout"], config["login-timeout"], trustedProxies, logBudget=config["log-budget"],
    )
    filesFactory = top.makeFilesFactory(
        password, config.get("credCheckers", []), trustedProxies,
        idleTimeout=config["idle-timeout"], maxLine=config["max-line"], loginTimeout=config["login-timeout"],
        logBudget=config["log-budget"],
    )
    for description in config["echo"]:
        _listen(description, echoFactory, reactor).setServiceParent(top)
    for description in config["files"]:
        _listen(description, filesFactory, reactor).setServiceParent(top)
    shutdown = top.makeDrain(callFromThread=getattr(reactor, "callFromThread", None))
    FasterTextLog().setServiceParent(top)  # twistd's log observer runs by then (echofile.logformat)
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


def _ownFiles(config: Mapping[str, Any]) -> list[str | None]:
    """The pid and log file twistd (or twist) was told to write: C{config.parent} is its own options."""
    parent = getattr(config, "parent", None)
    if parent is None:
        return []
    twistLog = getattr(parent.get("logFile"), "name", None)  # twist --log-file: an open file
    if not isinstance(twistLog, str) or twistLog.startswith("<"):  # <stdout>, <stderr>
        twistLog = None
    return [parent.get("pidfile"), parent.get("logfile"), twistLog]


def _listen(description: str, factory: Any, reactor: Any) -> IService:
    """A listening service for C{description}, with echofile's listen backlog unless it names one."""
    service = withDefaultBacklog(description, lambda d: strports.service(d, factory, reactor=reactor))
    resumeSessions(service.endpoint)  # an ssl: endpoint: reconnecting clients skip the full handshake
    service.endpoint = fasterTLS(service.endpoint)  # and its connections cost less Python (echofile.tlslayer)
    return service
