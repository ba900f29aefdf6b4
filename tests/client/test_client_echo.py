"""EchoClient against a StringTransport: when it ends, when it times out."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from echofile.client.echo import EchoClient
from echofile.client import ConnectionClosed, ReplyTimeout


class Producer:
    """Stands in for standard input, registered on the network transport."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


def connected(clock: Clock, timeout: float | None = 5.0):
    echo = EchoClient(clock, timeout)
    output = StringTransport()
    echo.output = output
    transport = StringTransport()
    echo.makeConnection(transport)
    transport.registerProducer(Producer(), True)
    return echo, transport, output


def outcome(echo: EchoClient) -> list:
    results: list = []
    echo.done.addBoth(results.append)
    return results


def test_ends_once_input_ended_and_everything_came_back():
    echo, transport, output = connected(Clock())
    echo.send(b"hello ")
    echo.send(b"world\n")
    assert transport.value() == b"hello world\n"
    echo.finishInput()
    assert not transport.disconnecting  # 12 bytes still out
    echo.dataReceived(b"hello world\n")
    assert output.value() == b"hello world\n"
    # The producer is unregistered before closing: a paused producer would otherwise keep it open.
    assert transport.producer is None and transport.disconnecting
    results = outcome(echo)
    echo.connectionLost(Failure(ConnectionDone()))
    assert results == [12]


def test_server_closing_early_is_an_error():
    echo, transport, output = connected(Clock())
    echo.send(b"abcdef")
    echo.dataReceived(b"abc")
    results = outcome(echo)
    echo.connectionLost(Failure(ConnectionDone()))
    assert results[0].check(ConnectionClosed)
    assert "after returning 3 of 6 bytes" in str(results[0].value)


def test_timeout_only_while_bytes_are_outstanding():
    clock = Clock()
    echo, transport, output = connected(clock)
    clock.advance(60)  # an interactive user thinking: no timeout
    assert not transport.disconnecting
    echo.send(b"ping\n")
    clock.advance(4)
    echo.dataReceived(b"pi")
    clock.advance(4)  # progress reset the timer
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    results = outcome(echo)
    echo.connectionLost(Failure(ConnectionDone()))
    assert results[0].check(ReplyTimeout)


def test_abandon_when_output_is_gone():
    echo, transport, output = connected(Clock())
    echo.send(b"lots")
    echo.abandon()
    assert transport.producer is None and transport.disconnecting
    results = outcome(echo)
    echo.connectionLost(Failure(ConnectionDone()))
    assert results == [0]
