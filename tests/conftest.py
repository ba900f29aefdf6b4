from pathlib import Path

import pytest

from support import populate


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A populated folder to serve (its own subfolder, so tmp_path has room for siblings)."""
    root = tmp_path / "root"
    root.mkdir()
    return populate(root)
