"""
What an operator can count: the Prometheus metrics of one echofile process.

The metrics are module-level objects in one registry of our own
(L{REGISTRY}), as prometheus-client intends: the code that sees an event
counts it where it happens (``metrics.LOGINS.labels(result="failure").inc()``),
whether or not ``--metrics`` serves them; updating a counter costs a lock and
an addition, and nothing here is on a per-byte or per-echo-message path.
L{echofile.status} serves the registry over HTTP.

Names and labels follow Prometheus' naming guide: an ``echofile_`` prefix,
base units (seconds, bytes), ``_total`` for counters, and label values from
small fixed sets, never from a client (no peer addresses, no user or file
names, which would let one client grow the exposition without bound).
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Everything ``/metrics`` shows; the process collector includes open fds and their limit.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

SESSIONS_OPEN = Gauge(
    "echofile_sessions_open", "Sessions admitted and not yet closed.", ["service"], registry=REGISTRY,
)
CONNECTIONS_ACCEPTED = Counter(
    "echofile_connections_accepted_total", "Connections admitted as sessions.", ["service"], registry=REGISTRY,
)
#: reason: total_cap, per_address_cap, untrusted_proxy, invalid_proxy_header, handshake_timeout (TLS),
#: proxy_header_timeout.
CONNECTIONS_REFUSED = Counter(
    "echofile_connections_refused_total", "Connections closed before they became a session, by reason.",
    ["service", "reason"], registry=REGISTRY,
)
#: result: success, failure (wrong credentials), error (a checker broke), locked_out (refused unchecked).
LOGINS = Counter("echofile_logins_total", "AUTH attempts, by result.", ["result"], registry=REGISTRY)
LOCKOUTS_STARTED = Counter(
    "echofile_lockouts_started_total", "Addresses locked out of AUTH after repeated failures.", registry=REGISTRY,
)
LOCKOUTS_ACTIVE = Gauge("echofile_lockouts_active", "Addresses locked out of AUTH now.", registry=REGISTRY)
#: command: FILE, RESUME, LIST, HASH; result: ok, interrupted (the connection went away, the file ended
#: or failed), and for HASH also refused (the file could not be read to the end).
TRANSFERS = Counter(
    "echofile_transfers_total", "File commands, by command and result.", ["command", "result"], registry=REGISTRY,
)
#: path: sendfile (the kernel copies), chunked (read and written by us), tls (chunks through TLS).
BYTES_SENT = Counter(
    "echofile_sent_bytes_total", "File body bytes sent, by how they were sent.", ["path"], registry=REGISTRY,
)
TRANSFER_DURATION = Histogram(
    "echofile_transfer_duration_seconds", "Time from a body's header to its trailer.", registry=REGISTRY,
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, float("inf")),
)
HASH_JOBS_RUNNING = Gauge("echofile_hash_jobs_running", "HASH computations running now.", registry=REGISTRY)
HASH_JOBS_WAITING = Gauge("echofile_hash_jobs_waiting", "HASH computations waiting for a slot.", registry=REGISTRY)
HASH_CACHE_HITS = Counter(
    "echofile_hash_cache_hits_total", "HASH answers taken from the digest cache.", registry=REGISTRY,
)
CHAT_EVENTS_DELIVERED = Counter(
    "echofile_chat_events_delivered_total", "Chat events handed to sessions.", registry=REGISTRY,
)
CHAT_EVENTS_DROPPED = Counter(
    "echofile_chat_events_dropped_total", "Chat events dropped from full session queues.", registry=REGISTRY,
)
CLUSTER_BROKER_CONNECTED = Gauge(
    "echofile_cluster_broker_connected", "1 while the cluster broker (Redis) is connected, else 0.",
    registry=REGISTRY,
)


class OpenSessions:
    """
    L{SESSIONS_OPEN} of one service, counted where sessions open and close
    (the reactor thread, the only one that does) and read when ``/metrics``
    is scraped.  The gauge's C{inc} and C{dec} each took its lock (about
    4,400 instructions each, two per session); a plain integer needs none:
    the scrape, in the web server's thread, reads one int, as atomic as
    the gauge's locked float.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> float:
        return self.count


_OPEN_SESSIONS: dict[str, OpenSessions] = {}


def openSessions(service: str) -> OpenSessions:
    """The one L{OpenSessions} of C{service}, which its C{echofile_sessions_open} sample reads."""
    counter = _OPEN_SESSIONS.get(service)
    if counter is None:
        counter = _OPEN_SESSIONS[service] = OpenSessions()
        SESSIONS_OPEN.labels(service=service).set_function(counter)
    return counter


REACTOR_LAG = Histogram(
    "echofile_reactor_lag_seconds", "How late a periodic reactor call ran: time the event loop was busy.",
    registry=REGISTRY, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, float("inf")),
)


class ReactorLagProbe(Service):
    """
    Schedules a call every C{interval} seconds and records how late it ran:
    a reactor busy with one long callback (a big LIST, a blocking call that
    slipped in) shows up here before users notice.

    @param observe: where each lateness goes (the L{REACTOR_LAG} histogram).
    """

    def __init__(
        self, clock: IReactorTime, interval: float = 0.5, observe: Callable[[float], None] = REACTOR_LAG.observe,
    ) -> None:
        self._clock = clock
        self.interval = interval
        self._observe = observe
        self._call: IDelayedCall | None = None
        self._due = 0.0

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def stopService(self) -> None:
        super().stopService()
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule(self) -> None:
        self._due = self._clock.seconds() + self.interval
        self._call = self._clock.callLater(self.interval, self._fire)

    def _fire(self) -> None:
        self._observe(max(0.0, self._clock.seconds() - self._due))
        self._schedule()
