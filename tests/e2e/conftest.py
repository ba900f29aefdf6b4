"""
End-to-end fixtures: the real ``twistd -n echofile`` as a subprocess (see
L{e2ehelpers}).  Teardown stops it with SIGTERM and checks that it exited
cleanly and never logged a traceback or an unhandled error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from e2ehelpers import Server, launch, makeTree, stop
from support import populate


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served root (with its traps) shared by a module's tests."""
    return makeTree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def server(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """
    One server shared by a module's tests (they only ever touch their own
    connections).  It yields a L{Server}: ports (C{.ports}), log path
    (C{.log}) and pid (C{.pid}).  Its tests all come from 127.0.0.1 and
    wait for their sessions' log lines: a module's sessions within a minute
    would spend that address's log budget, after which connect and close
    lines are counted, not written (docs/security.md, "Logging"); so the
    shared server gets a budget no module reaches.
    """
    running = launch(tree, tmp_path_factory.mktemp("logs"), "--log-budget", "100000")
    yield running
    stop(running)


@pytest.fixture
def startServer(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory for servers with their own options; each is stopped and checked at teardown."""
    started: list[Server] = []

    def start(*extra: str, root: Path | None = None, **launchOptions: Any) -> Server:
        """C{extra}: echofile options; C{launchOptions}: those of L{launch} (password, twistdOptions, preexec_fn, env)."""
        if root is None:
            root = makeTree(tmp_path / f"tree{len(started)}")
        running = launch(root, tmp_path / "logs", *extra, **launchOptions)
        started.append(running)
        return running

    yield start
    failures = []
    for running in reversed(started):
        try:
            stop(running)
        except BaseException as e:  # stop them all, then report
            failures.append(e)
    if failures:
        raise failures[0]



@pytest.fixture
def plainServer(startServer: Callable[..., Server], tmp_path: Path) -> Server:
    """A server on a small tree without traps (what a README reader would serve)."""
    root = tmp_path / "plain"
    root.mkdir()
    return startServer(root=populate(root))
