"""
Connecting, and the life of a file session around one command: greeting,
login, the command, goodbye, close.  Ctrl-C (L{Interruption}) drops the
connection and lets the command clean up (temporary files) before the
reactor stops.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Callable, Generator

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol

from echofile.client.console import Fatal, Streams
from echofile.client.errors import ClientError, Interrupted, ProtocolViolation, ServerError
from echofile.client.progress import Display
from echofile.client.protocol import FileClient


class Interruption:
    """
    Ctrl-C stops the reactor; before it stops, drop what the run is doing
    (connection attempt or connection) so that its cleanup (temporary files)
    runs, and hold the shutdown until the run has finished.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.happened = False
        self._stop: Callable[[], object] | None = None
        self._settled: Deferred[None] = Deferred()
        self._trigger = reactor.addSystemEventTrigger("before", "shutdown", self._fire)

    def onInterrupt(self, stop: Callable[[], object] | None) -> None:
        self._stop = stop

    def _fire(self) -> Deferred[None]:
        self.happened = True
        if self._stop is not None:
            self._stop()
        return self._settled

    def close(self) -> None:
        if not self.happened:
            self._reactor.removeSystemEventTrigger(self._trigger)
        self._settled.callback(None)


@dataclass
class Session:
    """Everything a command's run gets."""

    reactor: Any
    options: argparse.Namespace
    streams: Streams
    interruption: Interruption
    display: Display
    endpoint: IStreamClientEndpoint
    description: str
    client: FileClient | None = None


@inlineCallbacks
def connect(
    reactor: Any, endpoint: IStreamClientEndpoint, description: str, protocol: Protocol, timeout: float,
    interruption: Interruption,
) -> Generator[Deferred[Any], Any, Any]:
    """Connect C{protocol}; a failure is a L{Fatal} that says why in a person's words."""
    d = connectProtocol(endpoint, protocol)
    d.addTimeout(timeout, reactor)
    interruption.onInterrupt(d.cancel)
    try:
        connected = yield d
    except ConnectTimeout:
        raise Fatal(f"cannot connect to {description}: no answer within {timeout:g} s") from None
    except ConnectError as e:
        reason = os.strerror(e.osError) if isinstance(e.osError, int) else str(e).rstrip(".")
        raise Fatal(f"cannot connect to {description}: {reason}") from None
    except Exception as e:
        raise Fatal(f"cannot connect to {description}: {e}") from None
    if isinstance(connected, FileClient):
        interruption.onInterrupt(lambda: connected.abort(Interrupted()))
    else:
        interruption.onInterrupt(connected.transport.abortConnection)
    return connected


@inlineCallbacks
def fileSession(
    session: Session, password: str, command: Callable[[Session], Deferred[int]]
) -> Generator[Deferred[Any], Any, int]:
    """Connect, log in, run C{command}, say goodbye; fires with its exit status."""
    options = session.options
    display = session.display
    client = FileClient(session.reactor, options.timeout, onEvent=lambda text: display.note("*" + text))
    session.client = client
    description = session.description
    yield connect(session.reactor, session.endpoint, description, client, options.timeout, session.interruption)
    try:
        try:
            yield client.whenReady()
        except ServerError as e:
            raise Fatal(f"{description} refused the session: {e.reply}") from None
        except ProtocolViolation as e:
            raise Fatal(f"{description} does not look like an echofile server: {e}") from None
        except ClientError as e:
            raise Fatal(f"{description}: {e}") from None
        try:
            yield client.login(password, options.user)
        except ServerError as e:
            raise Fatal(f"login failed: {e.reply}") from None
        except ClientError as e:
            raise Fatal(f"login failed: {e}") from None
        status = yield command(session)
        try:
            yield client.quit()
        except ClientError:
            pass  # everything asked for is done; a failed goodbye changes nothing
        return status
    finally:
        closed = client.whenDisconnected()
        if client.transport is not None and client.transport.connected:
            client.transport.loseConnection()
        yield closed
