"""
``echofile-client``: parse the command line, find the password, run one
command from the table, turn the outcome into an exit status.

L{run} does the work and returns the exit status, with the reactor, the
standard streams and the environment as parameters so that tests can run
it in-process; L{main} is the console script around it (``task.react``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Generator, Mapping, NoReturn, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import react

from echofile.client.cli import (
    DEFAULT_ECHO,
    DEFAULT_FILES,
    ECHO_PORT,
    FILES_PORT,
    PROGRAM,
    HelpShown,
    endpoint,
    parseArguments,
    readPassword,
)
from echofile.client.commands import COMMANDS, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED
from echofile.client.console import Fatal, Streams, UsageError
from echofile.client.errors import Interrupted
from echofile.client.progress import makeDisplay
from echofile.client.session import Interruption, Session, fileSession

__all__ = [
    "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SOME_FAILED", "Fatal", "Streams", "UsageError", "main", "run",
]


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
    interruption = Interruption(reactor)
    try:
        status = yield _run(reactor, argv, streams, environ, interruption)
    except Fatal as e:
        if not interruption.happened:  # after Ctrl-C, "interrupted" is the whole story
            streams.err(f"{PROGRAM}: {e}")
        status = EXIT_ERROR
    except HelpShown as e:
        status = e.status
    except Interrupted:  # Ctrl-C while a command ran: it cleaned up on its way out
        status = EXIT_INTERRUPTED
    finally:
        interruption.close()
    if interruption.happened:
        streams.err(f"{PROGRAM}: interrupted")
        return EXIT_INTERRUPTED
    return status


@inlineCallbacks
def _run(
    reactor: Any, argv: Sequence[str], streams: Streams, environ: Mapping[str, str], interruption: Interruption
) -> Generator[Deferred[Any], Any, int]:
    options = parseArguments(argv, streams.stdout)
    command = COMMANDS[options.command]
    echo = command.service == "echo"
    description = options.connect or (DEFAULT_ECHO if echo else DEFAULT_FILES)
    where = endpoint(reactor, description, ECHO_PORT if echo else FILES_PORT, options.timeout)
    command.check(options)  # a usage error, before any prompt
    session = Session(reactor, options, streams, interruption, makeDisplay(streams.stderr, reactor, options.quiet),
                      where, description)
    if echo:
        return (yield command.run(session))
    password = readPassword(options, environ, streams.stdin)
    return (yield fileSession(session, password, command.run))


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
