"""
What a new files session costs (issue 16): counted, not timed.

Each test counts something a session's accept, admission and greeting
does per connection (calls, objects it keeps): the figures in
docs/performance.md ("What a new files session costs") come from them.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from echofile.limits import SessionTimer
from support import connect, makeFilesFactory, replies


class CountingClock(Clock):
    """A Clock that counts the calls scheduled on it (cancelled ones too)."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0

    def callLater(self, delay, callable, *args, **kw):  # type: ignore[no-untyped-def, override]
        self.scheduled += 1
        return super().callLater(delay, callable, *args, **kw)


def test_a_greeted_session_schedules_one_call(served):
    """
    The idle timeout and the login deadline start together: one DelayedCall,
    where scheduling the idle call and then cancelling it for the sooner
    deadline left a second (cancelled) one per session in the reactor's heap.
    """
    clock = CountingClock()
    protocol, transport = connect(makeFilesFactory(served, clock, idleTimeout=300.0, loginTimeout=60.0))
    assert replies(transport) == [b"#Server Ready."]
    assert clock.scheduled == 1
    assert [call.getTime() for call in clock.getDelayedCalls()] == [60.0]


def test_start_with_a_deadline_fires_both_from_one_call():
    clock = CountingClock()
    fired: list[str] = []
    timer = SessionTimer(clock, 300.0, lambda: fired.append("idle"))
    timer.start(60, lambda: fired.append("deadline"))
    assert clock.scheduled == 1
    clock.advance(59.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == ["deadline"]
    clock.advance(240)
    assert fired == ["deadline", "idle"]


def test_an_ipv4_socket_peer_is_its_key_without_a_parse(monkeypatch):
    """
    An IPv4 peer of a TCP socket is spelt by the kernel (dotted decimal,
    canonical): its key needs no ipaddress parse on every accept.  What a
    PROXY header or an IPv6 socket says is still normalised.
    """
    import socket

    from echofile import addresses
    from support import SocketTransportShell

    parsed: list[str] = []
    real = addresses.parseIP
    monkeypatch.setattr(addresses, "parseIP", lambda text: parsed.append(text) or real(text))
    a, b = socket.socketpair()
    with a, b:
        assert addresses.socketKey(SocketTransportShell(a)) == "127.0.0.1"
    assert parsed == []
    from twisted.internet.address import IPv6Address

    assert addresses.peerKey(IPv6Address("TCP", "::ffff:10.0.0.1", 1)) == "10.0.0.1"
    assert parsed == ["::ffff:10.0.0.1"]


def test_an_idle_greeted_session_holds_only_what_it_needs(served):
    """
    What most sessions never use is made on first use (the chat event queue,
    the login policy, the telnet filter), no hold is an empty set of its own,
    and the admission lets go of its callbacks once the session started:
    the idle files session's memory (issue 16: at most 3 KB).
    """
    from echofile.holds import _NO_HOLDS

    protocol, transport = connect(makeFilesFactory(served, Clock()))
    assert replies(transport) == [b"#Server Ready."]
    assert protocol._queue is None and protocol._loginPolicy is None and protocol._telnet is None
    assert protocol._holds is _NO_HOLDS
    admission = protocol._admission
    assert admission._onReady is None and admission._onBusy is None
    protocol.dataReceived(b"USER guest\r\n")  # each is made when it is needed
    assert protocol._telnet is not None and protocol._loginPolicy is not None
    protocol.deliverEvent("* bob says hi")  # the client reads: no queue needed
    assert replies(transport) == [b"#User guest accepted, send AUTH.", b"* bob says hi"]
    assert protocol._queue is None
    protocol.pauseProducing()  # the client stopped reading: the event waits
    protocol.deliverEvent("* bob says bye")
    assert replies(transport) == [] and len(protocol._queue) == 1
    protocol.resumeProducing()
    assert replies(transport) == [b"* bob says bye"]


def test_the_greeting_goes_straight_to_an_idle_socket(served):
    """
    On plain TCP with nothing buffered, the greeting (and any reply) is sent
    at once: through C{transport.write} it cost an C{epoll_ctl} to ask for
    writability, a reactor turn, and another C{epoll_ctl} per session.
    """
    import socket

    from support import SocketTransportShell

    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        shell = SocketTransportShell(a)
        factory = makeFilesFactory(served, Clock())
        protocol = factory.buildProtocol(shell.getPeer())
        b.settimeout(10)  # only a guard: the bytes are in the socket already, or the test failed
        protocol.makeConnection(shell)
        assert shell.writing == 0 and shell.dataBuffer == b"" and shell._tempDataLen == 0
        assert b.recv(100) == b"#Server Ready.\r\n"
        protocol.dataReceived(b"HELP\r\n")
        assert shell.writing == 0
        assert b.recv(4096).startswith(b"#")
