"""
The garbage collector after start-up: the start-up heap is frozen.

Everything made while starting (modules, classes, functions, the options,
the services: about 55,000 tracked objects) lives as long as the process,
yet every full collection would walk it again; C{gc.freeze} moves it to the
permanent generation once, after a collection, so full collections walk only
what the sessions made.  Sessions are not frozen: they come and go, and a
frozen cycle is never collected.  The thresholds stay CPython's: its full
collections are already amortised (one only when the objects that survived
since the last grew by a quarter), and the chat fan-out itself keeps no new
container alive (one send per receiver, no reactor turn), so a SAY round
triggers no collection at all (docs/performance.md, "Chat fan-out").
"""

from __future__ import annotations

import gc


def freezeStartupHeap() -> int:
    """Collect, then freeze what is left; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
