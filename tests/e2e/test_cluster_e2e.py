"""
Two real ``twistd -n echofile --cluster redis://...`` instances sharing one
redis-server of the test's own: chat and login penalties span both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

import pytest

from e2ehelpers import Server, waitFor
from redishelpers import accepts, freePort, spawnRedis, stopRedis


@pytest.fixture
def redisURL(tmp_path: Path) -> Iterator[str]:
    port = freePort()
    process = spawnRedis(port, tmp_path)
    try:
        waitFor(lambda: accepts(port, process), 10, "redis-server to accept connections")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stopRedis(process)


def clustered(startServer: Callable[..., Server], url: str, *extra: str) -> Server:
    server = startServer("--cluster", url, *extra)
    server.waitLog(r"chat: connected to Redis")
    server.waitLog(r"counting failed logins on every instance through Redis")
    return server


def test_chat_spans_two_instances(startServer, redisURL) -> None:
    a = clustered(startServer, redisURL)
    b = clustered(startServer, redisURL)
    with a.files() as one, b.files() as two:
        one.login()
        two.login()
        assert one.command("WHO") == b"#2 users online."
        assert one.lines(2) == [b"~guest1", b"~guest2"]
        assert two.command("SAY hello from b") == b"#Said."
        assert one.line() == b"*~guest2: hello from b"
        assert one.command("NICK ada") == b"#You are now ~ada."
        assert two.line() == b"*[server]: ~guest1 is now ~ada."
        assert two.command("NICK Ada") == b"!Nickname ~Ada is in use."
        assert two.command("MSG ~ada psst") == b"#Sent to ~ada."
        assert one.line() == b"*~guest2 (private): psst"


def test_failed_logins_count_on_both_instances(startServer, redisURL) -> None:
    a = clustered(startServer, redisURL, "--lockout-failures", "2")
    b = clustered(startServer, redisURL, "--lockout-failures", "2")
    for server in (a, b):
        with server.files() as conn:
            assert conn.line() == b"#Server Ready."
            assert conn.command("AUTH wrong") == b"!Bad password."
    a.waitLog(r"127\.0\.0\.1 locked out of AUTH .*all instances")
    with a.files() as conn:
        assert conn.line() == b"#Server Ready."
        assert conn.command("AUTH " + a.password) == b"!Too many failed attempts."


def test_a_password_in_the_url_is_used_and_never_logged(startServer, tmp_path: Path) -> None:
    secret = "pw-" + "x7Kq9" * 4
    port = freePort()
    process = spawnRedis(port, tmp_path, "--requirepass", secret)
    try:
        waitFor(lambda: accepts(port, process), 10, "redis-server to accept connections")
        a = clustered(startServer, f"redis://:{secret}@127.0.0.1:{port}/0")
        b = startServer("--cluster", f"redis://:wrong-{secret}@127.0.0.1:{port}/0")
        b.waitLog(r"chat: Redis at redis://\(password\)@127\.0\.0\.1:\d+/0 refused the connection: WRONGPASS")
        with a.files() as one, b.files() as two:
            one.login()
            two.login()
            assert one.command("WHO") == b"#1 users online."
            assert one.line() == b"~guest1"
            assert two.command("WHO") == b"!Chat is unavailable, try again later."
            assert two.command("FILE notes.txt").startswith(b"#Sending notes.txt")
        for server in (a, b):
            assert secret not in server.logText()
            assert "redis://(password)@127.0.0.1" in server.logText()
        assert len(re.findall("refused the connection", b.logText())) == 2  # chat and penalties, once each
    finally:
        stopRedis(process)


def test_the_password_can_come_from_the_environment(startServer, tmp_path: Path) -> None:
    """ECHOFILE_CLUSTER_PASSWORD: the URL (and so ps and the unit file) carries no password."""
    secret = "pw-" + "Zq4w8" * 4
    port = freePort()
    process = spawnRedis(port, tmp_path, "--requirepass", secret)
    try:
        waitFor(lambda: accepts(port, process), 10, "redis-server to accept connections")
        server = startServer("--cluster", f"redis://127.0.0.1:{port}/0", env={"ECHOFILE_CLUSTER_PASSWORD": secret})
        server.waitLog(r"chat: connected to Redis at redis://\(password\)@127\.0\.0\.1:\d+/0")
        with server.files() as conn:
            conn.login()
            assert conn.command("WHO") == b"#1 users online."
        assert secret not in server.logText()
    finally:
        stopRedis(process)
