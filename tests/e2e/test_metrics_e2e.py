"""
``--metrics`` against the real ``twistd -n echofile``: a scrape shows a login
and a FILE, the exposition passes ``promtool check metrics``, and
``/healthz`` answers 503 through a real drain (SIGTERM during a transfer),
the listener staying up until the drain is over.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import urllib.error
import urllib.request

from deployhelpers import HAPROXY_HEAD, freePort, startHaproxy, startServer as startDeployed, terminate
from e2ehelpers import BIG_NAME, BIG_SIZE, Conn, Server, stop, waitExit, waitFor
from support import PASSWORD, populate

METRICS = ("--metrics", "tcp:0:interface=127.0.0.1")


def statusPort(server: Server) -> int:
    return int(server.waitLog(r"StatusSite starting on (\d+)")[0].group(1))


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sample(text: bytes, name: str) -> float:
    """The value of one sample (0 when it is not exposed yet)."""
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_scrape_shows_a_login_and_a_file(startServer) -> None:
    server = startServer(*METRICS)
    port = statusPort(server)
    status, before = get(port, "/metrics")
    assert status == 200
    size = (server.root / "notes.txt").stat().st_size
    with server.files() as c:
        c.login()
        assert c.command("FILE notes.txt") == f"#Sending notes.txt ({size} bytes).".encode()
        c.exact(size + 2)
        assert c.line() == b"#File notes.txt sent successfully."
        _, during = get(port, "/metrics")
        assert c.command("QUIT") == b"#Bye."
    _, after = get(port, "/metrics")
    assert sample(after, 'echofile_logins_total{result="success"}') == sample(before, 'echofile_logins_total{result="success"}') + 1
    ok = 'echofile_transfers_total{command="FILE",result="ok"}'
    assert sample(after, ok) == sample(before, ok) + 1
    sent = 'echofile_sent_bytes_total{path="sendfile"}'
    assert sample(after, sent) == sample(before, sent) + size
    accepted = 'echofile_connections_accepted_total{service="files"}'
    assert sample(after, accepted) == sample(before, accepted) + 1
    assert sample(during, 'echofile_sessions_open{service="files"}') == 1
    assert sample(after, "echofile_transfer_duration_seconds_count") == sample(before, "echofile_transfer_duration_seconds_count") + 1
    assert sample(after, "process_open_fds") > 0 and sample(after, "process_max_fds") > 0
    checked = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"], input=after, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_healthz_answers_503_through_a_real_drain(startServer) -> None:
    """SIGTERM while a transfer to a reader that stopped is in flight: /healthz is 503 until the drain ends."""
    server = startServer(*METRICS, "--drain-timeout", "60")
    port = statusPort(server)
    assert get(port, "/healthz") == (200, b"ok\n")
    reader = server.files(rcvbuf=16 * 1024)
    try:
        reader.login()
        assert reader.command(f"FILE {BIG_NAME}") == f"#Sending {BIG_NAME} ({BIG_SIZE} bytes).".encode()
        server.proc.send_signal(signal.SIGTERM)
        server.waitLog(r"Shutting down: draining 1 sessions")
        assert get(port, "/healthz") == (503, b"draining\n")
        assert get(port, "/healthz") == (503, b"draining\n")
        assert server.proc.poll() is None
    finally:
        reader.abort()  # the drain is over once the transfer is gone
    waitExit(server, 15)
    assert "All sessions closed" in server.logText()


HAPROXY_HTTPCHK = HAPROXY_HEAD.format(extra="") + """
frontend echofile_files
    bind 127.0.0.1:{front}
    default_backend echofile_files

backend echofile_files
    option httpchk GET /healthz
    http-check expect status 200
    server a 127.0.0.1:{files} send-proxy-v2 check port {metrics} inter 200ms fall 2 rise 1
"""


def test_haproxy_takes_a_draining_instance_out_through_healthz(tmp_path) -> None:
    """The docs' HAProxy check (option httpchk GET /healthz on the metrics port) against a real drain."""
    root = tmp_path / "root"
    root.mkdir()
    populate(root)
    with open(root / BIG_NAME, "wb") as f:
        f.truncate(BIG_SIZE)
    server = startDeployed(
        tmp_path / "logs", root, "--files", "haproxy:tcp:0:interface=127.0.0.1", "--echo", "tcp:0:interface=127.0.0.1",
        "--trusted-proxy", "127.0.0.1", *METRICS, "--drain-timeout", "60",
        ready=r"FilesFactory \(PROXY\) starting on (\d+)",
    )
    haproxy = reader = None
    try:
        front = freePort()
        haproxy, haproxyLog = startHaproxy(
            HAPROXY_HTTPCHK.format(front=front, files=server.files_port, metrics=statusPort(server)), tmp_path,
        )

        def connected() -> Conn | None:
            try:
                return Conn(front, rcvbuf=16 * 1024)
            except ConnectionRefusedError:  # HAProxy is not listening yet
                return None

        reader = waitFor(connected, 10, "HAProxy to listen")
        reader.login(PASSWORD)
        assert reader.command(f"FILE {BIG_NAME}") == f"#Sending {BIG_NAME} ({BIG_SIZE} bytes).".encode()
        server.proc.send_signal(signal.SIGTERM)
        server.waitLog(r"Shutting down: draining 1 sessions")

        def down() -> list[str]:
            return [line for line in haproxyLog.read_text(errors="replace").splitlines() if " is DOWN" in line]

        lines = waitFor(down, 20, "HAProxy to mark the draining instance down")
        assert "503" in lines[0], lines
        assert server.proc.poll() is None, "the instance exited before the drain was over"
    finally:
        if reader is not None:
            reader.abort()  # the drain is over once the transfer is gone
        if haproxy is not None:
            terminate(haproxy)
        waitExit(server, 15)
        stop(server)
