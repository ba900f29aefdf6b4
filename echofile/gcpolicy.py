"""
The garbage collector after start-up: the start-up heap is frozen, and
young collections come every 10,000 new objects instead of every 700.

Everything made while starting (modules, classes, functions, the options,
the services: about 55,000 tracked objects) lives as long as the process,
yet every full collection would walk it again; C{gc.freeze} moves it to the
permanent generation once, after a collection, so full collections walk only
what the sessions made.  Sessions are not frozen: they come and go, and a
frozen cycle is never collected.

A new session leaves about a dozen tracked objects alive (its protocol,
transport, socket, address, timer...).  With CPython's young threshold of
700, a burst of connects ran a young collection every 50-odd sessions, each
walking the sessions made since, and promoted them on towards the full
collections: about 11,000 instructions per session (callgrind, 2,000
sessions), 6 % of a session's accept-admit-greet.  At
L{YOUNG_THRESHOLD} most of that goes (docs/performance.md, "Round 4"); the
young generation holds at most that many objects more before it is
collected (a few MB), and the older thresholds stay CPython's: full
collections are amortised (one only when the objects that survived since the
last grew by a quarter).  The chat fan-out keeps no new container alive (one
send per receiver, no reactor turn), so a SAY round triggers no collection
at all (docs/performance.md, "Chat fan-out").
"""

from __future__ import annotations

import gc

#: New tracked objects (minus those freed) between two young collections.
YOUNG_THRESHOLD = 10_000


def freezeStartupHeap() -> int:
    """Collect, freeze what is left, and space young collections; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()
