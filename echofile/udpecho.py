"""
RFC 862 echo over UDP: opt-in (a UDP echo on a public address can be abused
for reflection), so each datagram is answered only to a source that can
neither loop with us nor use us as a reflector, and at a bounded rate.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echofile.addresses import normalizeKey
from echofile.eventlog import peerText
from echofile.limits import cancelPending

#: Source ports whose datagrams are never answered: echo (7) and the other
#: services that answer any datagram (discard 9, systat 11, daytime 13, qotd
#: 17, chargen 19, time 37), and the usual reflection/amplification ports
#: (DNS, TFTP, portmap, NTP, NetBIOS, SNMP, CLDAP, SSDP, mDNS, memcached).
#: A reply to one of them can start a loop or an amplified flood; a real
#: client never sends from them.  Port 0 is not a valid source at all.
REFUSED_SOURCE_PORTS = frozenset({0, 7, 9, 11, 13, 17, 19, 37, 53, 69, 111, 123, 137, 161, 389, 1900, 5353, 11211})

#: Default datagrams per second answered per source address (0: no limit).
DEFAULT_UDP_RATE = 100
#: Most source addresses whose rate is tracked at once (least recently seen forgotten first).
MAX_UDP_SOURCES = 4096
#: Seconds between two log lines about dropped datagrams.
DROP_REPORT_INTERVAL = 60.0


class SourceRates:
    """
    A token bucket per source address, in a bounded table: each source may
    send C{rate} datagrams per second, in bursts of up to C{burst}.
    """

    def __init__(self, clock: IReactorTime, rate: float, burst: float, maxSources: int = MAX_UDP_SOURCES) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._maxSources = maxSources
        #: source -> (tokens, when they were counted); oldest-seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str) -> bool:
        """Take one token from C{source}'s bucket, if it has one."""
        now = self._clock.seconds()
        tokens, then = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[source] = (tokens, now)
        if len(self._buckets) > self._maxSources:
            self._buckets.popitem(last=False)
        return allowed


class EchoDatagramProtocol(DatagramProtocol):
    """
    Answer each datagram with an identical one to its source, except to
    sources that would make a loop or a reflector of us: our own port (a
    datagram spoofed from it would be echoed to ourselves for ever), the
    well-known service ports, and sources over their rate.  Drops are
    counted and reported at most once per L{DROP_REPORT_INTERVAL}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime | None = None,
        rate: float = DEFAULT_UDP_RATE,
        burst: float | None = None,
        maxSources: int = MAX_UDP_SOURCES,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self._clock = clock
        self._rates = SourceRates(clock, rate, burst or rate, maxSources) if rate > 0 else None
        self._ownPort: int | None = None
        #: Datagrams dropped since the last report, by reason.
        self.dropped: Counter[str] = Counter()
        self._report: IDelayedCall | None = None

    def startProtocol(self) -> None:
        self._ownPort = self.transport.getHost().port

    def stopProtocol(self) -> None:
        cancelPending(self._report)
        self._reportDrops()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        host, port = addr[0], addr[1]
        if port == self._ownPort or port in REFUSED_SOURCE_PORTS:
            self._drop("from a service port")
            return
        if self._rates is not None and not self._rates.allow(host):
            self._drop("over the rate")
            return
        try:
            self.transport.write(datagram, addr)
        except (OSError, MessageLengthError) as e:  # one bad peer must not stop the service
            self._log.debug("udp echo: cannot answer {peer}: {error}", peer=peerText(normalizeKey(host), port), error=e)

    def _drop(self, reason: str) -> None:
        """Count, and make sure a report comes, without a log line per datagram."""
        self.dropped[reason] += 1
        if self._report is None or not self._report.active():
            self._report = self._clock.callLater(DROP_REPORT_INTERVAL, self._reportDrops)

    def _reportDrops(self) -> None:
        self._report = None
        if not self.dropped:
            return
        counts, self.dropped = dict(self.dropped), Counter()
        self._log.warn(
            "udp echo: dropped {total} datagrams since the last report (at most one every {interval:.0f} s): {counts}",
            total=sum(counts.values()), interval=DROP_REPORT_INTERVAL, counts=counts,
        )
