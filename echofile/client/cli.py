"""
The command line of ``echofile-client``: the parsers (built from the
command table), where the server is, and where the password comes from.

Options may come before or after the command and mixed with its operands
(argparse's intermixed parsing); everything after the first ``--`` is an
operand, so ``get -- -x.txt`` fetches ``-x.txt``.
"""

from __future__ import annotations

import argparse
import getpass
import re
from pathlib import Path
from typing import IO, Any, Mapping, NoReturn, Sequence, TextIO

from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamClientEndpointStringParserWithReactor
from twisted.plugin import getPlugins

from echofile.client.commands import COMMANDS, Fatal, UsageError

PROGRAM = "echofile-client"
FILES_PORT = 8008
ECHO_PORT = 8007
DEFAULT_FILES = f"tcp:host=127.0.0.1:port={FILES_PORT}"
DEFAULT_ECHO = f"tcp:host=127.0.0.1:port={ECHO_PORT}"
DEFAULT_TIMEOUT = 60.0
PASSWORD_ENVIRONMENT_VARIABLE = "ECHOFILE_PASSWORD"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("echofile")
    except PackageNotFoundError:
        return "unknown"


class HelpShown(Exception):
    """--help or --version was printed; end with this status."""

    def __init__(self, status: int) -> None:
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and an exception, not an exit), and output goes to our stdout."""

    stdout: IO[str] | None = None

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise HelpShown(status)

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        if message:
            (self.stdout or file).write(message)  # type: ignore[union-attr]


def _positiveSeconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {value!r}")
    return seconds


def _addGlobalOptions(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--connect", metavar="ENDPOINT", default=d(None),
                        help=f"the server: HOST[:PORT], [V6ADDR]:PORT or a Twisted client endpoint string "
                        f"(default: {DEFAULT_FILES}, for echo {DEFAULT_ECHO})")
    parser.add_argument("--user", metavar="NAME", default=d(None),
                        help="log in to this account (default: the server's default account)")
    parser.add_argument("--password-file", metavar="PATH", default=d(None),
                        help=f"read the password from the first line of PATH (else ${PASSWORD_ENVIRONMENT_VARIABLE}, else a prompt)")
    parser.add_argument("--timeout", metavar="S", type=_positiveSeconds, default=d(DEFAULT_TIMEOUT),
                        help=f"give up after S seconds without a reply or progress (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no progress bars")


def _parsers(stdout: IO[str] | None) -> tuple[_Parser, dict[str, _Parser]]:
    lines = [f"  {command.usage:<44} {command.summary}" for command in COMMANDS.values()]
    top = _Parser(
        prog=PROGRAM, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Client of the echofile services: fetch and list files, chat, use the echo service.",
        epilog="commands:\n" + "\n".join(lines) + f"\n\n'{PROGRAM} COMMAND --help' describes one. Exit status: "
        "0 all succeeded, 1 some files failed, 2 usage, connection or login error, 130 interrupted.",
    )
    top.stdout = stdout
    _addGlobalOptions(top, suppress=False)
    top.add_argument("--version", action="version", version=f"{PROGRAM} {version()}")
    top.add_argument("command", choices=list(COMMANDS), help="what to do (see below)")
    top.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    commands: dict[str, _Parser] = {}
    for command in COMMANDS.values():
        parser = _Parser(prog=f"{PROGRAM} {command.name}", description=command.description, allow_abbrev=False)
        parser.stdout = stdout
        _addGlobalOptions(parser, suppress=True)
        command.addArguments(parser)
        commands[command.name] = parser
    return top, commands


def parseArguments(argv: Sequence[str], stdout: IO[str] | None = None) -> argparse.Namespace:
    """Global options, the command, then its own options and operands, in any order."""
    argv = list(argv)
    operands: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, operands = argv[:cut], argv[cut + 1 :]
    top, commands = _parsers(stdout)
    options = top.parse_args(argv)
    command = COMMANDS[options.command]
    parser = commands[command.name]
    if operands and command.operands is None:
        parser.error(f"unrecognized arguments: {' '.join(operands)}")
    sub = _parseCommand(parser, options.arguments, operands, command.operands)
    for key, value in vars(sub).items():
        setattr(options, key, value)
    del options.arguments
    return options


def _parseCommand(parser: _Parser, arguments: list[str], operands: list[str], dest: str | None) -> argparse.Namespace:
    """Parse C{arguments} intermixed, with C{operands} (after ``--``) as further values of C{dest}."""
    if not operands:
        return parser.parse_intermixed_args(arguments)
    action = next(a for a in parser._actions if a.dest == dest)
    required, action.required = action.required, False
    nargs, action.nargs = action.nargs, "*"
    try:
        sub = parser.parse_intermixed_args(arguments)
    finally:
        action.required, action.nargs = required, nargs
    given = getattr(sub, dest)
    values = ([] if given is None else given if isinstance(given, list) else [given]) + operands
    if nargs == "?":
        if len(values) > 1:
            parser.error(f"unrecognized arguments: {' '.join(values[1:])}")
        setattr(sub, dest, values[0])
    else:
        setattr(sub, dest, values)
    return sub


# -- where the server is ----------------------------------------------------------

_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?)\]|(?P<host>[A-Za-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?"
)
_TRUST_ROOTS = re.compile(r"(?:^|:)trustRoots=((?:\\.|[^:\\])*)")


def _endpointTypes() -> set[str]:
    types = {"tcp", "ssl", "unix"}
    for plugin in getPlugins(IStreamClientEndpointStringParserWithReactor):
        types.add(str(plugin.prefix).lower())
    return types


def endpoint(reactor: Any, description: str, defaultPort: int, timeout: float) -> IStreamClientEndpoint:
    """
    C{description} as an endpoint: ``HOST``, ``HOST:PORT`` or ``[V6ADDR]:PORT``
    (TCP to a name or address), else a Twisted client endpoint string.  A
    mistake is a L{UsageError} naming it.
    """
    short = _HOST_PORT.fullmatch(description)
    if short is not None and (short.group("v6") or short.group("host").lower() not in _endpointTypes()):
        host = short.group("v6") or short.group("host")
        port = int(short.group("port") or defaultPort)
        if not 0 < port < 65536:
            raise UsageError(f"invalid --connect {description!r}: port {port} out of range")
        try:
            return HostnameEndpoint(reactor, host.encode("idna"), port, timeout=timeout)
        except UnicodeError:
            raise UsageError(f"invalid --connect {description!r}: not a host name") from None
    roots = _TRUST_ROOTS.search(description)
    if roots is not None:
        path = Path(re.sub(r"\\(.)", r"\1", roots.group(1)))
        if not path.is_dir():
            what = "a file" if path.is_file() else "missing"
            raise UsageError(f"trustRoots= must name a folder of PEM certificates; {path} is {what}")
    try:
        return clientFromString(reactor, description)
    except Exception as e:
        raise UsageError(f"invalid --connect endpoint {description!r}: {e} (or give HOST:PORT, [V6ADDR]:PORT)") from None


# -- the password ---------------------------------------------------------------------


def readPassword(options: argparse.Namespace, environ: Mapping[str, str], stdin: TextIO) -> str:
    """--password-file, else $ECHOFILE_PASSWORD, else a prompt on a terminal; never argv."""
    if options.password_file is not None:
        try:
            with open(options.password_file, encoding="utf-8") as f:
                password = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise Fatal(f"cannot read the password file: {getattr(e, 'strerror', None) or e} ({options.password_file})") from None
        if not password:
            raise Fatal(f"the password file is empty: {options.password_file}")
        return password
    password = environ.get(PASSWORD_ENVIRONMENT_VARIABLE, "").strip()
    if password:
        return password
    if stdin.isatty():
        try:
            password = getpass.getpass("Password: ").strip()
        except (EOFError, KeyboardInterrupt):
            password = ""
        if password:
            return password
    raise Fatal(f"no password: use --password-file PATH or set {PASSWORD_ENVIRONMENT_VARIABLE}")
