"""
What the two pull producers that stream a reply (a file body, a listing)
share: one Deferred for the whole send, fired exactly once, after the
producer is unregistered and the send counted.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure


class OneSend:
    """
    The end of a send, for L{echofile.transfer.BodySender} and
    L{echofile.listing.ListingSender}: subclasses say what to give back
    (L{_release}), how to count it (L{_count}) and what the Deferred fires
    with (L{_result}).
    """

    _done: Deferred[Any] | None
    _consumer: IConsumer | None
    _onProgress: Callable[[int], None] | None

    def _finish(self, failure: Failure | None) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        self._release()
        assert self._consumer is not None
        self._consumer.unregisterProducer()
        # Let go of the session now: over TLS, Twisted drives a pull producer with a
        # cooperator task that holds it in a reference cycle, found only by the collector.
        self._consumer = self._onProgress = None
        self._count(failure)
        if failure is None:
            done.callback(self._result())
        else:
            done.errback(failure)

    def _release(self) -> None:
        """Give back what the send held (a file descriptor)."""

    def _count(self, failure: Failure | None) -> None:
        """Count the send in the metrics."""

    def _result(self) -> Any:
        """What the send's Deferred fires with."""
