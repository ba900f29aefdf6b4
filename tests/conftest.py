from pathlib import Path
from typing import Iterator

import pytest
from twisted.logger import globalLogPublisher

from support import populate


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A populated folder to serve (its own subfolder, so tmp_path has room for siblings)."""
    root = tmp_path / "root"
    root.mkdir()
    return populate(root)


@pytest.fixture
def logged() -> Iterator[list[dict]]:
    """Every log event emitted during the test."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
