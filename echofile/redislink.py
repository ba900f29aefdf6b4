"""
The connections to Redis that L{echofile.redischat} and
L{echofile.redispenalties} share the shape of: one for commands, one for a
subscription, both from one C{--cluster} URL, each reconnecting by itself.

The owner learns that a connection is ready (logged in, database selected,
subscribed) or lost from its own callbacks, so "is the broker reachable?"
is a fact the owner keeps, not a guess from the client library's internals.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

import txredisapi
from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger

#: What C{--cluster} takes (for usage errors).
URL_FORMS = "redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ssl_ca_certs=PATH]"
#: Where the broker's password comes from when the URL has none: the URL would show it in C{ps} and shell history.
PASSWORD_ENVIRONMENT_VARIABLE = "ECHOFILE_CLUSTER_PASSWORD"
CONNECT_TIMEOUT = 5
REPLY_TIMEOUT = 5
#: Seconds a connection that Redis refused (password, database) stays open before the next try.
REFUSED_RETRY = 10.0
#: The largest C{ssl_ca_certs} file taken (bytes): it is read whole, and a system CA bundle is about 200 KB.
MAX_CA_FILE = 1 << 20


@dataclass(frozen=True)
class RedisAddress:
    """Where the broker is and how to log in; C{str()} never shows the credentials."""

    host: str
    port: int = 6379
    db: int = 0
    tls: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    #: PEM file of the certificate authorities a C{rediss://} server is checked against (default: the system's).
    caCerts: str | None = None
    #: What C{caCerts} held when the URL was parsed (L{readCACertificates}).
    caCertificates: tuple[Certificate, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        login = "(password)@" if self.password is not None else ""
        return f"{'rediss' if self.tls else 'redis'}://{login}{self.host}:{self.port}/{self.db}"


def parseRedisURL(url: str, environ: Mapping[str, str] = os.environ) -> RedisAddress:
    """
    A C{--cluster} URL, as redis URLs are written; ValueError for anything
    else.  The errors never repeat the URL: it may hold a password.  A URL
    without a password takes C{ECHOFILE_CLUSTER_PASSWORD} from C{environ}
    when that is set (the URL's own password wins).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"the URL must be {URL_FORMS}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"the port is not a number in 0-65535 ({URL_FORMS})") from None
    if not host:
        raise ValueError(f"the URL has no host ({URL_FORMS})")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError("the database (after the /) must be a number")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if not password:
        password = environ.get(PASSWORD_ENVIRONMENT_VARIABLE) or None
    if username is not None and not password:
        raise ValueError(
            "a user name needs a password: USER:PASSWORD@HOST (or :PASSWORD@HOST without a user),"
            f" or USER@HOST with the password in {PASSWORD_ENVIRONMENT_VARIABLE}"
        )
    caCerts, caCertificates = None, ()
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "ssl_ca_certs":
            raise ValueError(f"unknown URL parameter {name!r} (only ssl_ca_certs=PATH, with rediss://)")
        caCerts = value
    if caCerts is not None:
        if parts.scheme != "rediss":
            raise ValueError("ssl_ca_certs is for rediss:// (TLS) URLs")
        caCertificates = readCACertificates(caCerts)
    return RedisAddress(
        host, port or 6379, int(db or 0), parts.scheme == "rediss", username, password or None, caCerts, caCertificates,
    )


def asRedisAddress(url: str | RedisAddress) -> RedisAddress:
    """C{url} parsed; an address already parsed as it is (its CA file is not read again)."""
    return url if isinstance(url, RedisAddress) else parseRedisURL(url)


def readCACertificates(path: str) -> tuple[Certificate, ...]:
    """
    The certificates of the PEM file at C{path}, read when the URL is parsed
    (by the option check, before anything starts) so that a missing, unreadable,
    oversized (L{MAX_CA_FILE}) or non-PEM file is a usage error, not a
    broker that never verifies; ValueError saying which.
    """
    try:
        # O_NONBLOCK: a FIFO named by mistake is refused below instead of blocking the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ValueError(f"ssl_ca_certs: no such file: {path!r}") from None
    except OSError as e:
        raise ValueError(f"ssl_ca_certs: cannot open {path!r}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"ssl_ca_certs: not a regular file: {path!r}")
        pem = _readAtMost(fd, MAX_CA_FILE + 1)
    except OSError as e:
        raise ValueError(f"ssl_ca_certs: cannot read {path!r}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(pem) > MAX_CA_FILE:
        raise ValueError(f"ssl_ca_certs: {path!r} is larger than {MAX_CA_FILE // 1024} KiB: not a CA bundle")
    blocks = _pemBlocks(pem)
    if not blocks:
        raise ValueError(f"ssl_ca_certs: no PEM certificate (-----BEGIN CERTIFICATE-----) in {path!r}")
    try:
        return tuple(Certificate.loadPEM(block) for block in blocks)
    except OpenSSLError:
        raise ValueError(f"ssl_ca_certs: {path!r} holds a certificate that is not valid PEM") from None


def endpointFor(address: RedisAddress, clock: IReactorTime) -> IStreamClientEndpoint:
    """TCP to the broker, in TLS for C{rediss://} (its certificate checked against the host name)."""
    endpoint: IStreamClientEndpoint = HostnameEndpoint(clock, address.host, address.port, timeout=CONNECT_TIMEOUT)
    if address.tls:
        trustRoot = None
        if address.caCerts is not None:
            trustRoot = trustRootFromCertificates(list(address.caCertificates))  # read by parseRedisURL
        endpoint = wrapClientTLS(optionsForClientTLS(address.host, trustRoot=trustRoot), endpoint)
    return endpoint


def _readAtMost(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    while limit > 0 and (chunk := os.read(fd, limit)):
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def _pemBlocks(pem: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [block + end for block in pem.split(end) if b"-----BEGIN CERTIFICATE-----" in block]


class _Ready:
    """
    Log in and select the database before the owner hears of the connection.

    txredisapi's own AUTH stops reconnecting for good after one refusal;
    here a refused login drops the connection and the usual backoff tries
    again, after L{REFUSED_RETRY} seconds (the password may be fixed on the
    server meanwhile).
    """

    factory: Any
    transport: Any

    @inlineCallbacks
    def _prepare(self) -> Any:
        link: RedisLink = self.factory.link
        try:
            address = link.address
            if address.password is not None:
                _check((yield self.auth(address.password, address.username)))  # type: ignore[attr-defined]
            yield self._whenUsable()
        except Exception as e:
            link._refused(e)
            # Not at once: ClientService would retry within a second, forever, and log each time.
            self._retry = link._clock.callLater(REFUSED_RETRY, self.transport.loseConnection)
            return
        link._connectionReady(self)

    @inlineCallbacks
    def connectionMade(self) -> Any:
        yield super().connectionMade()  # type: ignore[misc]
        yield self._prepare()

    def _whenUsable(self) -> Any:
        raise NotImplementedError

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)  # type: ignore[misc]
        retry = getattr(self, "_retry", None)
        if retry is not None and retry.active():
            retry.cancel()
        self.factory.link._connectionLost(self)


def _check(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


class _Commands(_Ready, txredisapi.RedisProtocol):
    @inlineCallbacks
    def _whenUsable(self) -> Any:
        if self.factory.link.address.db:
            _check((yield self.select(self.factory.link.address.db)))
        else:
            _check((yield self.ping()))  # a round trip: the server answers (and its TLS certificate passed)



class _Subscriber(_Ready, txredisapi.SubscriberProtocol):
    @inlineCallbacks
    def _whenUsable(self) -> Any:
        _check((yield self.subscribe(self.factory.link.channel)))

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.link.onMessage(message)



class RedisLink:
    """
    A command connection and a subscription to C{channel}; L{available}
    while both are ready.  C{onChange()} runs when that changes,
    C{onMessage(message)} for each message on the channel.

    Reconnecting, with a backoff up to 10 s, is txredisapi's (Twisted's
    ClientService under it).
    """

    _log = Logger()

    def __init__(
        self, address: RedisAddress, clock: IReactorTime, channel: str, what: str,
        onChange: Callable[[], None], onMessage: Callable[[Any], None],
    ) -> None:
        self.address, self.channel, self._what = address, channel, what
        self._clock = clock
        self.onChange, self.onMessage = onChange, onMessage
        #: The ready command connection (a txredisapi protocol: call its commands), or None.
        self.commands: Any = None
        self._subscriber: Any = None
        self._factories: list[Any] = []
        self._complained = False

    @property
    def available(self) -> bool:
        return self.commands is not None and self._subscriber is not None

    def start(self) -> None:
        commands = txredisapi.RedisFactory(str(self.address), None, 1, isLazy=True, replyTimeout=REPLY_TIMEOUT)
        commands.protocol = _Commands
        subscriber = txredisapi.SubscriberFactory(isLazy=True)
        subscriber.protocol = _Subscriber
        for factory in (commands, subscriber):
            factory.link = self
            factory.startConnecting(endpointFor(self.address, self._clock))
        self._factories = [commands, subscriber]

    def stop(self) -> Any:
        return gatherResults([f.disconnect() for f in self._factories], consumeErrors=True)

    def _connectionReady(self, protocol: Any) -> None:
        wasAvailable = self.available
        if isinstance(protocol, _Subscriber):
            self._subscriber = protocol
        else:
            self.commands = protocol
        self._complained = False
        if self.available and not wasAvailable:
            self.onChange()

    def _connectionLost(self, protocol: Any) -> None:
        wasAvailable = self.available
        if protocol is self._subscriber:
            self._subscriber = None
        elif protocol is self.commands:
            self.commands = None
        else:
            return
        if wasAvailable:
            self.onChange()

    def _refused(self, reason: Exception) -> None:
        """Once per outage: Redis answered but refused us (a wrong password, a database out of range)."""
        if not self._complained:
            self._complained = True
            self._log.error(
                "{what}: Redis at {address} refused the connection: {reason} (check --cluster)",
                what=self._what, address=str(self.address), reason=_withoutSecrets(str(reason), self.address),
            )


def _withoutSecrets(text: str, address: RedisAddress) -> str:
    if address.password:
        text = text.replace(address.password, "(password)")
    return text


class UsesLink:
    """For a service that talks to Redis through a L{RedisLink} held as C{_link}."""

    _link: RedisLink

    @property
    def available(self) -> bool:
        return self._link.available

    @property
    def _redis(self) -> Any:
        """The ready command connection, or None."""
        return self._link.commands
