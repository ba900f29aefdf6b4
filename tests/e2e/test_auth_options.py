"""Account options at start-up, against the real twistd: --no-guest and --auth htpasswd: errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2ehelpers import ALICE
from support import PASSWORD
from twistdhelpers import runTwistd


def startUpFailure(tmp_path: Path, *options: str) -> str:
    """Run twistd echofile with C{options}; it must refuse to start. Its output."""
    done = runTwistd(
        "--echo", "tcp:0:interface=127.0.0.1", "--files", "tcp:0:interface=127.0.0.1", "--root", str(tmp_path),
        *options, cwd=tmp_path, password=PASSWORD,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode != 0, output
    assert "Traceback" not in output and "starting on" not in output, output
    return output


def test_no_guest_without_any_account_is_a_usage_error(tmp_path):
    assert "--no-guest needs at least one --auth" in startUpFailure(tmp_path, "--no-guest")


@pytest.mark.parametrize("name", ["missing.htpasswd", "a-folder"])
def test_an_htpasswd_file_that_cannot_be_used_is_a_usage_error_naming_it(tmp_path, name):
    (tmp_path / "a-folder").mkdir()
    path = tmp_path / name
    output = startUpFailure(tmp_path, "--auth", f"htpasswd:{path}")
    assert str(path) in output and ("not found" in output or "not a regular file" in output), output


def test_no_guest_only_auth_accounts_log_in(startServer):
    server = startServer("--no-guest")
    server.waitLog(r"Account 'guest' is off \(--no-guest\)")
    with server.files() as conn:
        assert conn.line() == b"#Server Ready."
        assert conn.command(f"AUTH {PASSWORD}") == b"!Bad password."
        assert conn.command("USER guest") == b"#User guest accepted, send AUTH."
        assert conn.command(f"AUTH {PASSWORD}") == b"!Bad password."
        assert conn.command(f"USER {ALICE[0]}") == f"#User {ALICE[0]} accepted, send AUTH.".encode()
        assert conn.command(f"AUTH {ALICE[1]}") == b"#You are logged in."
    assert PASSWORD not in server.logText()
