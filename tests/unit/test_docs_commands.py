"""
Every command that README.md and docs/ show is checked against the code, so
the docs cannot drift from it again:

- ``twistd ... echofile OPTIONS`` and ``twist ... echofile OPTIONS``: twistd's
  own flags must be twistd's, and the echofile options are parsed by the real
  L{echofile.tap.Options}.  What names the operator's machine (a ``--root``,
  key and certificate files, an htpasswd file) is swapped for one that exists
  here; ``...`` ("and the rest") is dropped.
- ``echofile-client ...``: parsed by the client's own argument parser.
- Any other program (``apt-get``, ``htpasswd``, ``openssl``, ``nc``, ...)
  must be listed in L{OTHER_PROGRAMS}, with the test that runs it for real,
  or, for system administration that no test may do to this machine
  (``useradd``, ``systemctl``), with the reason.

A new command in the docs therefore fails here until it parses, or until
someone says which test runs it.  A line in a code block counts as a command
when it starts with ``$ `` or with a program this module knows (code blocks
also hold transcripts and configuration files, which are not commands).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import bcrypt
import pytest
from twisted.python import usage
from twisted.scripts._twistd_unix import ServerOptions

from echofile.client.cli import HelpShown, parseArguments
from echofile.options import Options

TOP = Path(__file__).resolve().parents[2]
DOCS = [TOP / "README.md", *sorted((TOP / "docs").glob("*.md"))]
TESTS = TOP / "tests"

#: Programs run by a test (the test named here), or not run, and why.
OTHER_PROGRAMS: dict[str, str] = {
    "python3": "test:tests/unit/test_packaging.py::test_ci_runs_the_readme_test_command",  # .ci/run runs the README lines
    "pip": "test:tests/unit/test_packaging.py::test_ci_runs_the_readme_test_command",
    ".venv/bin/pip": "test:tests/unit/test_packaging.py::test_ci_runs_the_readme_test_command",
    ".venv/bin/pytest": "test:tests/unit/test_packaging.py::test_ci_runs_the_readme_test_command",
    "apt-get": "test:tests/unit/test_packaging.py::test_ci_runs_the_readme_test_command",
    ".": "not run: activates the venv in the reader's shell",
    "export": "not run: sets a variable in the reader's shell",
    "telnet": "test:tests/e2e/test_tools.py::test_telnet_session",
    "nc": "test:tests/e2e/test_tools.py::test_nc_pipelined_session",
    "htpasswd": "test:tests/loopback/test_htpasswd.py",
    "openssl": "test:tests/e2e/test_deploy_tls.py::test_openssl_s_client_whole_session",
    "systemd-socket-activate": "test:tests/e2e/test_deploy_systemd.py::test_session_through_inherited_sockets",
    "python": "not run: the benchmarks (benchmarks/run.py) are measured by hand, never in the test suite",
    "cmp": "not run: compares the reader's own file",
    "echo": "not run: shell output",
    "useradd": "not run: system administration on the operator's machine",
    "install": "not run: system administration on the operator's machine",
    "cp": "not run: system administration on the operator's machine",
    "systemctl": "not run: system administration on the operator's machine",
}

_SHELL_SEPARATORS = {"&&", "||", "|", ";"}
_REDIRECTIONS = {"<", ">", ">>", "2>", "2>&1"}
_ENVIRONMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")
#: A word of a synopsis: WHERE, COMMAND, [--user, NAME]...
_PLACEHOLDER = re.compile(r"\[?-*[a-z-]*\[?[A-Z]{3,}\]?(\.\.\.)?\]?")


def shownCommands() -> list[tuple[str, str]]:
    """(where, command line) for every command line in a code block of the docs."""
    found = []
    for path in DOCS:
        inFence = False
        lines = path.read_text().splitlines()
        number = 0
        while number < len(lines):
            line = lines[number]
            number += 1
            if line.strip().startswith("```"):
                inFence = not inFence
                continue
            if not (inFence or line.startswith("    ")):
                continue
            text = line.strip()
            if text.startswith("$ "):
                text = text[2:]
            while text.endswith("\\") and number < len(lines):  # a continued line
                text = text[:-1] + " " + lines[number].strip()
                number += 1
            if _looksLikeACommand(text):
                found.append((f"{path.relative_to(TOP)}:{number}", text))
    return found


def _withoutComment(text: str) -> str:
    return re.split(r"\s#\s|\s{2,}#", text, maxsplit=1)[0]


def _looksLikeACommand(text: str) -> bool:
    try:
        words = shlex.split(_withoutComment(text))
    except ValueError:  # not shell (a Python or config line)
        return False
    if not words or any(_PLACEHOLDER.fullmatch(word) for word in words):
        return False  # a synopsis such as "echofile-client [--connect WHERE] COMMAND ..."
    while len(words) > 1 and _ENVIRONMENT.match(words[0]):
        words = words[1:]
    first = words[0]
    return first in OTHER_PROGRAMS or first in ("twistd", "twist", "echofile-client") or first.endswith(
        ("/twistd", "/twist", "/echofile-client")
    )


def simpleCommands(text: str) -> list[list[str]]:
    """A command line cut at shell operators, without comments, redirections and variable assignments."""
    words = shlex.split(_withoutComment(text).replace("{socket,service}", "socket"))
    commands: list[list[str]] = [[]]
    skipNext = False
    for word in words:
        if skipNext:
            skipNext = False
        elif word in _SHELL_SEPARATORS:
            commands.append([])
        elif word in _REDIRECTIONS:
            skipNext = True
        elif not commands[-1] and _ENVIRONMENT.match(word):
            continue
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Things on this machine to stand in for the operator's: a root, an htpasswd file."""
    base = tmp_path_factory.mktemp("docs")
    root = base / "root"
    root.mkdir()
    htpasswd = base / "echofile.htpasswd"
    htpasswd.write_bytes(b"alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)) + b"\n")
    return {"root": str(root), "htpasswd": str(htpasswd)}


def _echofileArguments(words: list[str], machine: dict[str, str]) -> list[str]:
    """The echofile options of a twistd/twist line, with the operator's paths swapped for ours."""
    arguments: list[str] = []
    for i, word in enumerate(words):
        if i and words[i - 1] == "--root":
            word = machine["root"]  # the operator's folder (or "...")
        elif word == "...":
            continue
        elif "htpasswd:" in word:
            word = re.sub(r"htpasswd:\S+", "htpasswd:" + machine["htpasswd"], word)
        arguments.append(word)
    return arguments


def _knownEndpointOnly(option: str, description: str) -> str:
    """Endpoint strings name the operator's certificates and sockets: check the kind, not the files."""
    kind = description.split(":", 1)[0]
    assert kind in {"tcp", "tcp6", "ssl", "tls", "unix", "systemd", "haproxy"}, f"--{option}: unknown endpoint {description!r}"
    return description


@pytest.mark.parametrize("where, line", shownCommands(), ids=lambda value: value if ":" in value[:40] else "")
def test_every_command_in_the_docs_is_checked(where: str, line: str, machine, monkeypatch) -> None:
    monkeypatch.setattr("echofile.options._checkEndpoint", _knownEndpointOnly)
    twistdFlags = {name for name in _longOptions(ServerOptions())}
    for words in simpleCommands(line):
        program = words[0]
        name = program.rsplit("/", 1)[-1] if program.endswith(("/twistd", "/twist", "/echofile-client")) else program
        if name in ("twistd", "twist"):
            assert "echofile" in words, f"{where}: {name} without the echofile plugin: {line}"
            split = words.index("echofile")
            for flag in words[1:split]:
                flagName = flag.split("=", 1)[0].lstrip("-")
                assert flagName in twistdFlags or flag in ("-n",), f"{where}: {flag} is not a {name} option"
            options = Options()
            try:
                options.parseOptions(_echofileArguments(words[split + 1 :], machine))
            except usage.UsageError as e:
                pytest.fail(f"{where}: {' '.join(words)}: {e}")
        elif name == "echofile-client":
            try:
                parseArguments(words[1:])
            except HelpShown:
                pass
            except SystemExit as e:  # pragma: no cover - the parser reports usage errors this way
                pytest.fail(f"{where}: {' '.join(words)}: exit {e.code}")
        else:
            assert program in OTHER_PROGRAMS, f"{where}: say which test runs {program!r} (OTHER_PROGRAMS): {line}"


def _longOptions(options: usage.Options) -> set[str]:
    names = set(options.longOpt) | {name.rstrip("=") for name in options.longOpt}
    names |= {"uid", "gid", "pidfile", "logfile", "reactor", "log-format", "log-file", "nodaemon"}
    return {name.rstrip("=") for name in names}


def test_every_test_named_in_the_table_exists() -> None:
    for program, exercised in OTHER_PROGRAMS.items():
        if not exercised.startswith("test:"):
            assert exercised.startswith("not run: "), (program, exercised)
            continue
        path, _, function = exercised[len("test:") :].partition("::")
        source = (TOP / path).read_text()
        assert not function or re.search(rf"^def {re.escape(function)}\(", source, re.MULTILINE), exercised
        assert program.rsplit("/", 1)[-1] in source or program in ("python3", "pip", ".venv/bin/pip", ".venv/bin/pytest", "apt-get"), (
            f"{path} does not mention {program}"
        )


def test_the_docs_show_commands_at_all() -> None:
    """Guards the extraction itself: it must find the README's two set-up commands and the client examples."""
    lines = [line for _, line in shownCommands()]
    assert any(line.startswith("python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd") for line in lines)
    assert any(line.startswith("echofile-client get ") for line in lines)
    assert len(lines) > 30
