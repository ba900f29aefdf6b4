"""The start-up heap is frozen once the service has started (echofile.gcpolicy)."""

from __future__ import annotations

import gc

from twisted.internet.testing import MemoryReactorClock

from echofile.gcpolicy import YOUNG_THRESHOLD
from echofile.tap import Options, makeService


def test_the_startup_heap_is_frozen_when_the_service_starts(served):
    """
    What exists once the service has started and the reactor runs (what twistd does: makeService,
    startService, reactor.run) goes to the permanent generation, so full collections skip it; what
    sessions make later does not.
    """
    gc.unfreeze()
    thresholds = gc.get_threshold()
    options = Options()
    options.parseOptions(["--root", str(served), "--echo", "tcp:7", "--files", "tcp:8"])
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    made = [object.__new__(type("MadeAtStartUp", (), {}))]
    try:
        service.startService()
        assert gc.get_freeze_count() == 0  # not before the reactor runs (its signal handlers first)
        reactor.run()  # MemoryReactor: runs the callWhenRunning hooks, then stops
        frozen = gc.get_freeze_count()
        assert frozen > 0 and not any(o is made for o in gc.get_objects())  # frozen: no generation lists it
        later = [object.__new__(type("MadeLater", (), {}))]
        assert any(o is later for o in gc.get_objects())
        assert gc.get_freeze_count() == frozen
    finally:
        service.stopService()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_young_collections_are_spaced_once_the_service_runs(served):
    """
    A session leaves a dozen tracked objects: at CPython's 700 a connect burst ran a young
    collection every 50-odd sessions (6 % of a session's instructions); the older thresholds stay.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    options = Options()
    options.parseOptions(["--root", str(served), "--echo", "tcp:7", "--files", "tcp:8"])
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    try:
        service.startService()
        assert gc.get_threshold() == (700, 10, 10)
        reactor.run()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    finally:
        service.stopService()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
