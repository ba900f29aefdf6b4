"""``--metrics``: /metrics and /healthz over real HTTP on a loopback port."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent
from twisted.web.client import Agent, readBody

from echofile import metrics
from echofile.status import makeStatusSite


class Draining:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
def statusPort():
    """A status site on a free loopback port; yields (url, draining flag)."""
    draining = Draining()
    d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(makeStatusSite(draining))
    port = pytest_twisted.blockon(d)
    yield f"http://127.0.0.1:{port.getHost().port}", draining
    pytest_twisted.blockon(port.stopListening())


@inlineCallbacks
def get(url: str):
    agent = Agent(reactor)
    response = yield agent.request(b"GET", url.encode("ascii"))
    body = yield readBody(response)
    return response, body


@pytest_twisted.inlineCallbacks
def test_healthz_is_200_then_503_while_draining(statusPort):
    url, draining = statusPort
    response, body = yield get(url + "/healthz")
    assert (response.code, body) == (200, b"ok\n")
    draining.value = True
    response, body = yield get(url + "/healthz")
    assert (response.code, body) == (503, b"draining\n")


@pytest_twisted.inlineCallbacks
def test_metrics_exposition_moves_and_is_valid(statusPort):
    url, _ = statusPort
    metrics.LOGINS.labels(result="failure").inc(0)
    response, before = yield get(url + "/metrics")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    metrics.LOGINS.labels(result="failure").inc()
    _, after = yield get(url + "/metrics")

    def sample(text: bytes, name: bytes) -> float:
        for line in text.splitlines():
            if line.startswith(name + b" "):
                return float(line.split()[-1])
        raise AssertionError(f"{name!r} not in the exposition")

    name = b'echofile_logins_total{result="failure"}'
    assert sample(after, name) == sample(before, name) + 1
    for expected in (b"process_open_fds", b"process_max_fds", b"echofile_reactor_lag_seconds_bucket"):
        assert expected in after
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is installed by the README's test command"
    checked = subprocess.run([promtool, "check", "metrics"], input=after, capture_output=True)
    # promtool exits 0 for a valid exposition; lint remarks (e.g. on the default process metrics) go to stdout.
    assert checked.returncode == 0, checked.stdout + checked.stderr


class _RawRequest(Protocol):
    """Sends one request as given (bytes an HTTP client library would refuse) and keeps the answer."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.received)


@pytest_twisted.inlineCallbacks
def test_health_checks_and_hostile_paths_write_no_log_line(statusPort, logged):
    """
    A balancer's HEAD /healthz every few seconds writes nothing (Twisted
    would log "Using GET to fake a HEAD request" for each), and a request
    path full of escape sequences never reaches the log at all.
    """
    url, _ = statusPort
    response = yield Agent(reactor).request(b"HEAD", (url + "/healthz").encode("ascii"))
    yield readBody(response)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-length") == [b"3"]  # as GET's "ok\n"
    port = int(url.rsplit(":", 1)[1])
    for method in (b"GET", b"HEAD"):
        for path in (b"/\x1b[2J\x1b]0;owned\x07", b"/healthz/\x1b[2J\x1b]0;owned\x07", b"/metrics/\x9b2J"):
            raw = _RawRequest(method + b" " + path + b" HTTP/1.0\r\nHost: x\r\n\r\n")
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
            answer = yield raw.done
            assert answer.startswith(b"HTTP/1."), (method, path, answer)
    server = ("twisted.web.server", "twisted.web.http", "twisted.web.resource", "echofile")  # not the client side
    texts = [formatEvent(e) for e in logged if e.get("log_namespace", "").startswith(server)]
    assert texts == []


@pytest_twisted.inlineCallbacks
def test_head_of_a_missing_page_writes_no_log_line(statusPort, logged):
    """
    HEAD of any page but /healthz (``/``, ``/nothing``, a 16 KB path) was
    rendered through twisted.web's error page, which logged "HEAD request
    <Request ... uri=...> is returning a message body" each time, the
    client's whole URI in it: about 16 KB of log per request, unbudgeted.
    """
    url, _ = statusPort
    port = int(url.rsplit(":", 1)[1])
    for path in (b"/", b"/nothing", b"/x" + b"A" * 16000):
        raw = _RawRequest(b"HEAD " + path + b" HTTP/1.0\r\nHost: x\r\n\r\n")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
        answer = yield raw.done
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 404 "), (path[:20], answer[:100])
        assert body == b""
    response, body = yield get(url + "/nothing")  # GET still gets the page
    assert response.code == 404 and body
    server = ("twisted.web.server", "twisted.web.http", "twisted.web.resource", "echofile")
    texts = [formatEvent(e) for e in logged if e.get("log_namespace", "").startswith(server)]
    assert texts == []
