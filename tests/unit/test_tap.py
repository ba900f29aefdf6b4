"""Options and the service tree, built on a MemoryReactorClock."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from echofile.echo import EchoFactory
from echofile.files import FilesFactory
from echofile.tap import Options, makeService, parseUDPAddress


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_are_loopback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = parse()
    assert options["echo"] == ["tcp:8007:interface=127.0.0.1"]
    assert options["files"] == ["tcp:8008:interface=127.0.0.1"]
    assert options["echo-udp"] is None
    assert options["root"] == str(tmp_path.resolve())
    assert (options["idle-timeout"], options["max-line"], options["max-connections"], options["max-per-ip"]) == (
        300.0, 4096, 1000, 50,
    )


def test_repeatable_endpoints():
    options = parse("--files", "tcp:1:interface=127.0.0.1", "--files", r"tcp:2:interface=\:\:1", "--echo", "tcp:3")
    assert options["files"] == ["tcp:1:interface=127.0.0.1", r"tcp:2:interface=\:\:1"]
    assert options["echo"] == ["tcp:3"]


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--idle-timeout", "0"], "idle-timeout"),
        (["--idle-timeout", "nan"], "idle-timeout"),
        (["--max-line", "-3"], "max-line"),
        (["--max-line", "4k"], "max-line"),
        (["--max-connections", "x"], "max-connections"),
        (["--max-per-ip", "0"], "max-per-ip"),
        (["--files", "tcp:nope"], "files"),
        (["--echo", "bogus:1"], "echo"),
        (["--echo-udp", "host:port"], "echo-udp"),
        (["--echo-udp", "70000"], "echo-udp"),
        (["--root", "/no/such/folder"], "root"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(argv, option):
    with pytest.raises(usage.UsageError, match=f"--{option}"):
        parse(*argv)


def test_root_must_be_a_folder(served):
    with pytest.raises(usage.UsageError, match="--root"):
        parse("--root", str(served / "notes.txt"))


def test_udp_addresses():
    assert parseUDPAddress("7007") == ("127.0.0.1", 7007)
    assert parseUDPAddress("0.0.0.0:7") == ("0.0.0.0", 7)
    assert parseUDPAddress("[::1]:7") == ("::1", 7)


class ReactorWithUDP(MemoryReactorClock):
    """MemoryReactorClock records TCP listens; record UDP ones too."""

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpPorts.append((port, protocol, interface, maxPacketSize))
        return MemoryReactorClock.listenTCP(self, port, None, interface=interface)


def test_make_service_listens_where_asked(served):
    reactor = ReactorWithUDP()
    reactor.udpPorts = []
    options = parse(
        "--root", str(served), "--echo", "tcp:7:interface=127.0.0.1", "--files", "tcp:8:interface=127.0.0.1",
        "--files", "tcp:9:interface=127.0.0.1", "--echo-udp", "17", "--max-line", "100", "--auth", "memory:al:pw",
    )
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    service.startService()
    try:
        ports = [(port, type(factory), interface) for port, factory, _, interface in reactor.tcpServers]
        assert ports[:3] == [(7, EchoFactory, "127.0.0.1"), (8, FilesFactory, "127.0.0.1"), (9, FilesFactory, "127.0.0.1")]
        assert reactor.tcpServers[1][1].maxLine == 100
        assert [(port, interface) for port, _, interface, _ in reactor.udpPorts] == [(17, "127.0.0.1")]
    finally:
        service.stopService()


def test_log_budget_option_sets_each_services_per_address_budget(served):
    reactor = MemoryReactorClock()
    options = parse("--root", str(served), "--echo", "tcp:7:interface=127.0.0.1", "--files", "tcp:8:interface=127.0.0.1",
                    "--log-budget", "3")
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    service.startService()
    try:
        factories = [factory for _, factory, _, _ in reactor.tcpServers]
        assert [type(f) for f in factories] == [EchoFactory, FilesFactory]
        assert [f.logBudgets.forKey("192.0.2.1").limit for f in factories] == [3, 3]
    finally:
        service.stopService()
    assert parse("--root", str(served))["log-budget"] == 20


def test_log_budget_is_given_to_the_factories_when_they_are_built(served, monkeypatch):
    """Not set on them afterwards: no moment in which a factory's budgets have the default."""
    import echofile.echo
    import echofile.files
    from echofile.eventlog import LogBudgets

    built = []

    class Recorded(LogBudgets):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append((self.service.service, self.limit))

    for module in (echofile.echo, echofile.files):
        monkeypatch.setattr(module, "LogBudgets", Recorded)
    makeService(parse("--root", str(served), "--log-budget", "3"), reactor=MemoryReactorClock(),
                environ={"ECHOFILE_PASSWORD": "pw"})
    assert built == [("echo", 3), ("files", 3)]


def test_each_factory_takes_a_log_budget(served):
    from echofile.limits import ConnectionLimiter
    from support import makeFilesFactory

    echo = EchoFactory(MemoryReactorClock(), ConnectionLimiter(1, 1, "echo"), None, logBudget=4)
    files = makeFilesFactory(served, MemoryReactorClock(), logBudget=5)
    assert (echo.logBudgets.forKey("192.0.2.1").limit, files.logBudgets.forKey("192.0.2.1").limit) == (4, 5)
    default = EchoFactory(MemoryReactorClock(), ConnectionLimiter(1, 1, "echo"), None)
    assert default.logBudgets.limit == 20


def test_random_password_is_logged_once(served):
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        makeService(parse("--root", str(served)), reactor=MemoryReactorClock(), environ={})
    finally:
        globalLogPublisher.removeObserver(events.append)
    announcements = [e for e in events if "password" in e.get("log_format", "")]
    assert len(announcements) == 1 and len(announcements[0]["password"]) >= 16


def test_abuse_options(served):
    options = parse("--lockout-failures", "0", "--lockout-exempt", "10.0.0.0/8", "--login-timeout", "5", "--drain-timeout", "3")
    assert options["lockout-failures"] == 0 and options["login-timeout"] == 5.0 and options["drain-timeout"] == 3.0
    assert [str(n) for n in options["lockout-exempt"]] == ["10.0.0.0/8"]
    for argv, option in [
        (["--lockout-failures", "-1"], "lockout-failures"),
        (["--lockout-exempt", "nope"], "lockout-exempt"),
        (["--login-timeout", "0"], "login-timeout"),
        (["--drain-timeout", "x"], "drain-timeout"),
    ]:
        with pytest.raises(usage.UsageError, match=f"--{option}"):
            parse(*argv)


def test_hash_options_reach_one_server_wide_hasher(served):
    from echofile.hashing import FileHasher

    assert (parse()["hash-jobs"], parse()["hash-cache"]) == (2, 1024)
    options = parse("--root", str(served), "--hash-jobs", "3", "--hash-cache", "0",
                    "--files", "tcp:8:interface=127.0.0.1", "--files", "tcp:9:interface=127.0.0.1")
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    hashes = service.getServiceNamed("hashes")
    assert isinstance(hashes, FileHasher) and hashes.maxJobs == 3 and hashes.cache.maxEntries == 0
    service.startService()
    try:
        factories = [getattr(f, "wrappedFactory", f) for _, f, _, _ in reactor.tcpServers]
        assert [f.hashes for f in factories if isinstance(f, FilesFactory)] == [hashes, hashes]
    finally:
        service.stopService()
    for argv, option in [
        (["--hash-jobs", "0"], "hash-jobs"),
        (["--hash-jobs", "two"], "hash-jobs"),
        (["--hash-cache", "-1"], "hash-cache"),
    ]:
        with pytest.raises(usage.UsageError, match=f"--{option}"):
            parse(*argv)


def test_many_hash_jobs_grow_the_reactor_thread_pool(served):
    from twisted.python.threadpool import ThreadPool

    class ReactorWithThreads(MemoryReactorClock):
        pool = ThreadPool(0, 10)

        def getThreadPool(self):
            return self.pool

        def suggestThreadPoolSize(self, size):
            self.pool.adjustPoolsize(maxthreads=size)

    reactor = ReactorWithThreads()
    makeService(parse("--root", str(served)), reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    assert reactor.pool.max == 10
    makeService(parse("--root", str(served), "--hash-jobs", "12"), reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    assert reactor.pool.max == 16


def test_no_guest_needs_an_auth_account(served):
    with pytest.raises(usage.UsageError, match="--no-guest needs at least one --auth"):
        parse("--root", str(served), "--no-guest")
    assert parse("--root", str(served), "--no-guest", "--auth", "memory:al:pw")["no-guest"]
    assert not parse("--root", str(served))["no-guest"]


@pytest.mark.parametrize(
    "argv, environ, expected",
    [
        ([], {}, "No {variable} set"),
        ([], {"ECHOFILE_PASSWORD": "pw"}, "takes its password from {variable}"),
        (["--no-guest", "--auth", "memory:al:pw"], {"ECHOFILE_PASSWORD": "pw"}, "is off (--no-guest)"),
    ],
)
def test_start_up_says_where_the_guest_password_came_from(served, logged, argv, environ, expected):
    makeService(parse("--root", str(served), *argv), reactor=MemoryReactorClock(), environ=environ)
    sources = [e for e in logged if "{user!r}" in e.get("log_format", "")]
    assert len(sources) == 1 and expected in sources[0]["log_format"], sources
    if environ:  # a password the operator chose is never logged
        assert not any("password" in event for event in logged)


def test_echo_udp_rate_option(served):
    from echofile.echo import EchoDatagramProtocol

    assert parse("--root", str(served))["echo-udp-rate"] == 100
    for value in ["-1", "x", "1.5"]:
        with pytest.raises(usage.UsageError, match="--echo-udp-rate"):
            parse("--echo-udp-rate", value)
    reactor = ReactorWithUDP()
    reactor.udpPorts = []
    options = parse("--root", str(served), "--echo-udp", "17", "--echo-udp-rate", "3")
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    service.startService()
    try:
        (_, protocol, _, _), = reactor.udpPorts
        assert isinstance(protocol, EchoDatagramProtocol) and protocol._rates._rate == 3
        assert protocol._clock is reactor
    finally:
        service.stopService()


def test_trusted_proxies(served):
    """--trusted-proxy: loopback by default, repeatable, IPv4-mapped spellings normalised, given to both services."""
    assert [str(n) for n in parse()["trusted-proxy"]] == ["127.0.0.0/8", "::1/128"]
    options = parse(
        "--root", str(served), "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::ffff:192.0.2.7",
        "--lockout-exempt", "::ffff:127.0.0.0/104", "--login-timeout", "7",
        "--files", "haproxy:tcp:8:interface=127.0.0.1", "--echo", "haproxy:tcp:7:interface=127.0.0.1",
    )
    assert [str(n) for n in options["trusted-proxy"]] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert [str(n) for n in options["lockout-exempt"]] == ["127.0.0.0/8"]
    with pytest.raises(usage.UsageError, match="--trusted-proxy"):
        parse("--trusted-proxy", "balancer.example")
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor, environ={"ECHOFILE_PASSWORD": "pw"})
    service.startService()
    try:
        factories = {type(f.wrappedFactory): f.wrappedFactory for _, f, _, _ in reactor.tcpServers}
        for kind in (EchoFactory, FilesFactory):
            policy = factories[kind].admission
            assert [str(n) for n in policy.trustedProxies] == ["10.0.0.0/8", "192.0.2.7/32"]
            assert policy.deadline == 7.0  # --login-timeout bounds the TLS handshake and the PROXY header
    finally:
        service.stopService()


def test_dotfiles_are_hidden_unless_asked(served):
    """The served tree hides dot names by default; --dotfiles serves them."""
    (served / ".env").write_text("SECRET=1\n")
    for argv, served_ in [((), False), (("--dotfiles",), True)]:
        options = parse("--root", str(served), *argv)
        assert options["dotfiles"] == served_
        service = makeService(options, reactor=MemoryReactorClock(), environ={"ECHOFILE_PASSWORD": "pw"})
        factory = next(s for s in service if hasattr(s, "factory") and isinstance(s.factory, FilesFactory)).factory
        tree = factory.portal.realm.tree
        assert tree.dotfiles is served_
        assert tree.allows(".env") is served_
        tree.close()
