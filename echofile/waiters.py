"""
Deferreds waiting for a moment (a session tracker emptied, a drain over, a
client greeted or disconnected): L{Waiters} hands them out and fires them
all when it comes.  Whether it already came is the owner's state, so a
moment that can come again (a tracker emptied twice) needs nothing more.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_T = TypeVar("_T")


class Waiters(Generic[_T]):
    """The Deferreds handed out by L{wait} and not yet fired."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[Deferred[_T]] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self) -> Deferred[_T]:
        """A Deferred that fires at the next L{fire}."""
        d: Deferred[_T] = Deferred()
        self._waiting.append(d)
        return d

    def fire(self, result: _T | Failure) -> None:
        """Fire every waiting Deferred with C{result} (an errback for a Failure); those made meanwhile wait on."""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
