"""
The ``echofile-client`` command line: parse, find the password, connect,
run one command, turn the outcome into an exit status.

L{run} does the work and returns the exit status, with the reactor, the
standard streams and the environment as parameters so that tests can run
it in-process; L{main} is the console script around it (``task.react``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, NoReturn, Sequence, TextIO

from twisted.internet import fdesc
from twisted.internet.defer import Deferred, inlineCallbacks, race
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react

from echofile.client.chat import ChatInput
from echofile.client.commands import formatListing, getFiles
from echofile.client.echo import EchoClient, StdioBridge
from echofile.client.progress import makeDisplay
from echofile.client.protocol import ClientError, FileClient, ProtocolViolation, ServerError

PROGRAM = "echofile-client"
DEFAULT_FILES = "tcp:host=127.0.0.1:port=8008"
DEFAULT_ECHO = "tcp:host=127.0.0.1:port=8007"
DEFAULT_TIMEOUT = 60.0
PASSWORD_ENVIRONMENT_VARIABLE = "ECHOFILE_PASSWORD"

EXIT_OK = 0  # everything asked for succeeded
EXIT_SOME_FAILED = 1  # some files (or the listed folder) were refused or could not be saved
EXIT_ERROR = 2  # usage, connection or login error
EXIT_INTERRUPTED = 130


class Fatal(Exception):
    """An error that ends the run: one line on stderr, exit status 2."""


class UsageError(Fatal):
    pass


# -- command line ---------------------------------------------------------------


def _positiveSeconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {value!r}")
    return seconds


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and an exception, not an exit)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise _HelpShown(status)


class _HelpShown(Exception):
    """--help was printed; end with this status."""

    def __init__(self, status: int) -> None:
        self.status = status


#: Global options that take a value (the command line is split at the command after them).
_VALUED = ("--connect", "--user", "--password-file", "--timeout")


def _addGlobalOptions(parser: argparse.ArgumentParser, default: Any) -> None:
    def d(value: Any) -> Any:
        return argparse.SUPPRESS if default is argparse.SUPPRESS else value

    parser.add_argument("--connect", metavar="ENDPOINT", default=d(None),
                        help=f"Twisted client endpoint of the server (default: {DEFAULT_FILES}, for echo {DEFAULT_ECHO})")
    parser.add_argument("--user", metavar="NAME", default=d(None),
                        help="log in to this account (default: the server's default account)")
    parser.add_argument("--password-file", metavar="PATH", default=d(None),
                        help=f"read the password from the first line of PATH (else ${PASSWORD_ENVIRONMENT_VARIABLE}, else a prompt)")
    parser.add_argument("--timeout", metavar="S", type=_positiveSeconds, default=d(DEFAULT_TIMEOUT),
                        help=f"give up after S seconds without a reply or progress (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no progress bars")


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    top = _Parser(
        prog=PROGRAM, allow_abbrev=False,
        description="Client of the echofile services: fetch and list files, use the echo service.",
        epilog="Commands: get NAME... [-o DIR] [--force] | list [DIR] | echo [TEXT...] | chat. "
        f"'{PROGRAM} COMMAND --help' describes one. Exit status: 0 all succeeded, "
        "1 some files failed, 2 usage, connection or login error.",
    )
    _addGlobalOptions(top, None)
    top.add_argument("command", choices=["get", "list", "echo", "chat"], help="what to do")
    commands: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, description: str) -> argparse.ArgumentParser:
        parser = _Parser(prog=f"{PROGRAM} {name}", description=description, allow_abbrev=False)
        _addGlobalOptions(parser, argparse.SUPPRESS)
        commands[name] = parser
        return parser

    get = command("get", "Fetch files into a folder, each under its base name.")
    get.add_argument("names", nargs="+", metavar="NAME", help="file path on the server")
    get.add_argument("-o", "--output", metavar="DIR", default=".", help="folder to save into (default: the current folder)")
    get.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    listing = command("list", "List a folder of the server (default: its root).")
    listing.add_argument("directory", nargs="?", metavar="DIR")
    echo = command("echo", "Send TEXT (or standard input) to the echo service; print what comes back.")
    echo.add_argument("text", nargs="*", metavar="TEXT")
    command("chat", "Interactive chat: each line is said to everyone; /msg USER TEXT, /who, /help, /quit.")
    return top, commands


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    Global options, the command, then the command's own arguments, where
    options and names may come in any order (argparse's intermixed parsing).
    """
    top, commands = _parsers()
    split = len(argv)
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _VALUED:
            index += 2
            continue
        if arg == "--" or not arg.startswith("-"):
            split = index + 1 if arg != "--" else index + 2
            break
        index += 1
    options = top.parse_args(argv[:split])
    sub = commands[options.command].parse_intermixed_args(argv[split:])
    for key, value in vars(sub).items():
        setattr(options, key, value)
    return options


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


# -- running ----------------------------------------------------------------------


@dataclass
class Streams:
    """Where the run reads and writes (the real ones, or test doubles)."""

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    def out(self, line: str) -> None:
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def err(self, line: str) -> None:
        self.stderr.write(line + "\n")
        self.stderr.flush()


class _Interruption:
    """
    Ctrl-C stops the reactor; before it stops, drop what the run is doing
    (connection attempt or connection) so that its cleanup (temporary files)
    runs, and hold the shutdown until the run has finished.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.happened = False
        self._stop: Callable[[], object] | None = None
        self._settled: Deferred[None] = Deferred()
        self._trigger = reactor.addSystemEventTrigger("before", "shutdown", self._fire)

    def onInterrupt(self, stop: Callable[[], object] | None) -> None:
        self._stop = stop

    def _fire(self) -> Deferred[None]:
        self.happened = True
        if self._stop is not None:
            self._stop()
        return self._settled

    def close(self) -> None:
        if not self.happened:
            self._reactor.removeSystemEventTrigger(self._trigger)
        self._settled.callback(None)


def _endpoint(reactor: Any, description: str) -> IStreamClientEndpoint:
    try:
        return clientFromString(reactor, description)
    except Exception as e:
        raise UsageError(f"invalid --connect endpoint {description!r}: {e}") from None


@inlineCallbacks
def _connect(
    reactor: Any, description: str, protocol: Protocol, timeout: float, interruption: _Interruption
) -> Generator[Deferred[Any], Any, Any]:
    endpoint = _endpoint(reactor, description)
    d = connectProtocol(endpoint, protocol)
    d.addTimeout(timeout, reactor)
    interruption.onInterrupt(d.cancel)
    try:
        connected = yield d
    except ConnectTimeout:
        raise Fatal(f"cannot connect to {description}: no answer within {timeout:g} s") from None
    except ConnectError as e:
        reason = os.strerror(e.osError) if isinstance(e.osError, int) else str(e).rstrip(".")
        raise Fatal(f"cannot connect to {description}: {reason}") from None
    except Exception as e:
        raise Fatal(f"cannot connect to {description}: {e}") from None
    interruption.onInterrupt(connected.transport.abortConnection)
    return connected


@inlineCallbacks
def _fileSession(
    reactor: Any, options: argparse.Namespace, streams: Streams, password: str, interruption: _Interruption
) -> Generator[Deferred[Any], Any, int]:
    display = makeDisplay(streams.stderr, reactor, options.quiet)
    client = FileClient(reactor, options.timeout, onEvent=lambda text: display.note("*" + text))
    description = options.connect or DEFAULT_FILES
    yield _connect(reactor, description, client, options.timeout, interruption)
    try:
        try:
            yield client.whenReady()
        except ServerError as e:
            raise Fatal(f"{description} refused the session: {e.reply}") from None
        except ProtocolViolation as e:
            raise Fatal(f"{description} does not look like an echofile server: {e}") from None
        except ClientError as e:
            raise Fatal(f"{description}: {e}") from None
        try:
            yield client.login(password, options.user)
        except ServerError as e:
            raise Fatal(f"login failed: {e.reply}") from None
        except ClientError as e:
            raise Fatal(f"login failed: {e}") from None

        if options.command == "get":
            result = yield getFiles(
                client, options.names, Path(options.output), options.force, display, streams.out, streams.err
            )
            if result.connectionError is not None:
                return EXIT_ERROR
            status = EXIT_SOME_FAILED if result.failed else EXIT_OK
        elif options.command == "chat":
            yield _chat(reactor, client, streams)
            status = EXIT_OK
        else:
            try:
                entries = yield client.list(options.directory)
            except ServerError as e:
                streams.err(e.reply)
                status = EXIT_SOME_FAILED
            except ClientError as e:
                raise Fatal(f"list failed: {e}") from None
            else:
                for line in formatListing(entries):
                    streams.out(line)
                status = EXIT_OK
        try:
            yield client.quit()
        except ClientError:
            pass  # everything asked for is done; a failed goodbye changes nothing
        return status
    finally:
        closed = client.whenDisconnected()
        if client.transport is not None and client.transport.connected:
            client.transport.loseConnection()
        yield closed


@inlineCallbacks
def _chat(reactor: Any, client: FileClient, streams: Streams) -> Generator[Deferred[Any], Any, None]:
    """Until /quit, end of input, or the server goes away (a L{Fatal} error)."""
    chat = ChatInput(client, streams.err)
    inputFd = streams.stdin.fileno()
    stdio = StandardIO(chat, stdin=inputFd, stdout=streams.stdout.fileno(), reactor=reactor)
    try:
        index, _ = yield race([chat.finished, client.whenDisconnected()])
    finally:
        stdio.loseConnection()
        yield chat.closed  # standard output flushed
        fdesc.setBlocking(inputFd)  # StandardIO made it non-blocking: give a terminal back as it was
    if index == 1:
        reason = f" (server said: {client.serverSaid})" if client.serverSaid else ""
        raise Fatal(f"the server closed the connection{reason}")


@inlineCallbacks
def _echoSession(
    reactor: Any, options: argparse.Namespace, streams: Streams, interruption: _Interruption
) -> Generator[Deferred[Any], Any, int]:
    echo = EchoClient(reactor, options.timeout)
    description = options.connect or DEFAULT_ECHO
    yield _connect(reactor, description, echo, options.timeout, interruption)
    bridge = StdioBridge(echo)
    if options.text:
        inputFd = os.open(os.devnull, os.O_RDONLY)
    else:
        inputFd = streams.stdin.fileno()
    try:
        stdio = StandardIO(bridge, stdin=inputFd, stdout=streams.stdout.fileno(), reactor=reactor)
        echo.output = stdio
        echo.transport.registerProducer(stdio, True)
        stdio.registerProducer(echo.transport, True)
        if options.text:
            echo.send(os.fsencode(" ".join(options.text) + "\n"))
        try:
            yield echo.done
        except ClientError as e:
            raise Fatal(str(e)) from None
        finally:
            stdio.unregisterProducer()  # else a paused producer keeps the output open (see EchoClient._close)
            stdio.loseConnection()
            yield bridge.closed
    finally:
        if options.text:
            os.close(inputFd)
        else:
            fdesc.setBlocking(inputFd)  # StandardIO made it non-blocking: give a terminal back as it was
    return EXIT_OK


@inlineCallbacks
def run(
    reactor: Any,
    argv: Sequence[str],
    streams: Streams | None = None,
    environ: Mapping[str, str] | None = None,
) -> Generator[Deferred[Any], Any, int]:
    """Run one command line; fires with the exit status.  Errors become one line on stderr."""
    streams = streams or Streams(sys.stdin, sys.stdout, sys.stderr)
    environ = os.environ if environ is None else environ
    interruption = _Interruption(reactor)
    try:
        status = yield _run(reactor, argv, streams, environ, interruption)
    finally:
        interruption.close()
    if interruption.happened:
        streams.err(f"{PROGRAM}: interrupted")
        return EXIT_INTERRUPTED
    return status


@inlineCallbacks
def _run(
    reactor: Any, argv: Sequence[str], streams: Streams, environ: Mapping[str, str], interruption: _Interruption
) -> Generator[Deferred[Any], Any, int]:
    try:
        options = parseArguments(argv)
        if options.command == "echo":
            return (yield _echoSession(reactor, options, streams, interruption))
        _endpoint(reactor, options.connect or DEFAULT_FILES)  # a typo is a usage error, before any prompt
        if options.command == "get":
            folder = Path(options.output)
            if folder.exists() and not folder.is_dir():
                raise UsageError(f"-o {options.output}: not a folder")
        password = readPassword(options, environ, streams.stdin)
        if options.command == "get":
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise Fatal(f"cannot make the folder {options.output}: {e.strerror}") from None
        return (yield _fileSession(reactor, options, streams, password, interruption))
    except _HelpShown as e:
        return e.status
    except Fatal as e:
        streams.err(f"{PROGRAM}: {e}")
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run the command line on the global reactor and exit with its status."""
    arguments = sys.argv[1:] if argv is None else list(argv)

    @inlineCallbacks
    def _main(reactor: Any) -> Generator[Deferred[Any], Any, None]:
        try:
            status = yield run(reactor, arguments)
        except Exception as e:  # a bug; still one line, not a traceback
            sys.stderr.write(f"{PROGRAM}: internal error: {e!r}\n")
            status = EXIT_ERROR
        raise SystemExit(status)

    react(_main)
