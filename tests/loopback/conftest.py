"""Fixtures of the loopback tests."""

from __future__ import annotations

import pytest
import pytest_twisted

from redishelpers import freePort, startRedis, stopRedis


@pytest.fixture
def redisPort(tmp_path):
    port = freePort()
    process = pytest_twisted.blockon(startRedis(port, tmp_path))
    yield port, process
    stopRedis(process)
