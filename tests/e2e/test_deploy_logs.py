"""
JSON logs: ``twist --log-format=json echofile ...`` writes one event per
line (RFC 7464 JSON text sequence: each line is RS + a JSON object), with
the structured fields of our log calls as top-level keys.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from twisted.logger import eventsFromJSONLogFile, formatEvent

from e2ehelpers import PASSWORD, STARTUP_TIMEOUT, Conn, waitFor
from support import populate
from twistdhelpers import start, stop, twistPath


def readEvents(path: Path) -> list[dict]:
    events = []
    # Not splitlines(): it also splits at RS (\x1e).  A last line without its LF is still being written.
    for line in path.read_text().split("\n")[:-1]:
        assert line.startswith("\x1e"), line[:80]
        events.append(json.loads(line[1:]))
    return events


def test_json_events_with_structured_fields(tmp_path: Path):
    (tmp_path / "root").mkdir()
    root = populate(tmp_path / "root")
    log = tmp_path / "echofile.json"
    # Its own output (none expected: the events go to --log-file) is the launcher's log file.
    server = start(
        [twistPath(), "--log-format=json", f"--log-file={log}", "echofile", "--root", str(root),
         "--files", "tcp:0:interface=127.0.0.1", "--echo", "tcp:0:interface=127.0.0.1"],
        tmp_path / "output", root, ready={}, password=PASSWORD, cwd=tmp_path,
    )
    proc = server.proc
    try:
        def filesPort() -> int | None:
            if proc.poll() is not None:
                pytest.fail(f"twist exited ({proc.returncode}): {server.logText()!r}")
            for event in readEvents(log) if log.exists() else []:
                text = event.get("log_text", "")
                if text.startswith("FilesFactory starting on "):
                    return int(text.rsplit(" ", 1)[1])
            return None

        port = waitFor(filesPort, STARTUP_TIMEOUT, "the files port in the JSON log")
        with Conn(port) as conn:  # type: ignore[arg-type]
            conn.login(PASSWORD)
            assert conn.command("FILE binary.bin") == b"#Sending binary.bin (1024 bytes)."
            conn.exact(1024 + 2)
            assert conn.line() == b"#File binary.bin sent successfully."
            assert conn.command("QUIT") == b"#Bye."

        def sent() -> dict | None:
            return next((e for e in readEvents(log) if e.get("log_format", "").endswith(") sent {file} ({size} bytes) in {duration:.3f}s")), None)

        event = waitFor(sent, 10, "the 'sent' event")
    finally:
        stop(server, check=False)  # its log is the JSON file, checked below
    assert proc.returncode in (0, -signal.SIGTERM), proc.returncode  # twist re-raises the signal that stopped it

    assert isinstance(event, dict)
    assert event["file"] == str(root / "binary.bin")
    assert event["size"] == 1024
    assert event["user"] == "guest"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", event["peer"])
    assert isinstance(event["duration"], float) and event["duration"] >= 0
    assert event["log_namespace"] == "echofile.files.FileSession"
    assert event["log_level"]["name"] == "info"

    events = readEvents(log)
    assert not [e for e in events if "log_failure" in e or e.get("isError")], "errors in the log"
    assert events[-1].get("log_format") == "Main loop terminated."
    assert any(e.get("log_format", "").startswith("files: connection from")
               and re.fullmatch(r"127\.0\.0\.1:\d+", e.get("peer", "")) for e in events)
    assert any(e.get("log_format", "").endswith("logged in as {user}") and e.get("user") == "guest" for e in events)
    assert not any(PASSWORD in json.dumps(e) for e in events)  # ECHOFILE_PASSWORD set: never logged
    # Twisted reads its own format back, events and all.
    with open(log) as f:
        again = list(eventsFromJSONLogFile(f))
    assert len(again) == len(events)
    assert " (guest) sent " in formatEvent(next(e for e in again if " sent {file} " in e.get("log_format", "")))
