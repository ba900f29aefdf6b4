"""
The command table of ``echofile-client``: for each command its arguments,
the checks made before anything is asked of the server, and what it does
with a session.  The command line (L{echofile.client.cli}) and the help are
built from this table; L{echofile.client.main} runs one entry.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

from twisted.internet.defer import Deferred, inlineCallbacks

from echofile import wire
from echofile.client.console import Fatal, UsageError
from echofile.client.errors import ClientError, ServerError
from echofile.client.getting import Getter, PlanError, getFiles, getTree, plan
from echofile.client.replies import Entry
from echofile.client.session import Session

EXIT_OK = 0  # everything asked for succeeded
EXIT_SOME_FAILED = 1  # some files (or the listed folder) were refused or could not be saved
EXIT_ERROR = 2  # usage, connection or login error
EXIT_INTERRUPTED = 130

__all__ = ["COMMANDS", "Command", "Fatal", "UsageError", "formatEntry"]


@dataclass(frozen=True)
class Command:
    """
    One command.  C{service} is ``files`` (connect, log in, then C{run} with
    the session's client) or ``echo`` (C{run} connects itself); C{operands}
    names the argument that takes what follows ``--``.
    """

    name: str
    usage: str
    summary: str
    description: str
    service: str
    operands: str | None
    addArguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Session], Deferred[int]]
    check: Callable[[argparse.Namespace], None] = lambda options: None


# -- get ---------------------------------------------------------------------------


def _getArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="file path on the server (with -r: a folder)")
    parser.add_argument("-o", "--output", metavar="DIR", default=".",
                        help="folder to save into (default: the current folder); '-' writes the one file to standard output")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--parents", action="store_true",
                        help="keep each name's folders under DIR (a/readme.txt goes to DIR/a/readme.txt)")
    parser.add_argument("-r", "--recursive", action="store_true",
                        help="each NAME is a folder: fetch it and everything in it, into DIR/<its name>/")
    parser.add_argument("-c", "--continue", dest="resume", action="store_true",
                        help="keep an interrupted download's part (.NAME.part) and resume it with RESUME next time")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="do not check each file against the server's SHA-256 (HASH)")


def _getCheck(options: argparse.Namespace) -> None:
    if options.resume and not options.verify:
        raise UsageError("--continue needs the SHA-256 check: a resumed file is only kept once its digest matched")
    if options.resume and options.output == "-":
        raise UsageError("--continue cannot resume on standard output (-o -)")
    if options.output == "-":
        if len(options.names) != 1 or options.recursive:
            raise UsageError("-o - writes one file to standard output: give exactly one NAME, without -r")
        return
    folder = Path(options.output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {options.output}: not a folder")
    try:  # with -r, two folders of one base name would mix their files
        plan(options.names, options.parents and not options.recursive)
    except PlanError as e:
        raise UsageError(str(e)) from None


@inlineCallbacks
def _get(session: Session) -> Generator[Deferred[Any], Any, int]:
    options, streams = session.options, session.streams
    folder = Path(options.output)
    toStdout = options.output == "-"
    if not toStdout:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise Fatal(f"cannot make the folder {options.output}: {e.strerror}") from None
    assert session.client is not None
    isatty = getattr(streams.stdout, "isatty", None)
    getter = Getter(
        session.client, folder, options.force, session.display, streams.out, streams.err,
        showWhere=bool(isatty and isatty()), stdout=streams.binaryOut() if toStdout else None,
        verify=options.verify, resume=options.resume,
    )
    try:
        if options.recursive:
            for directory in options.names:
                if getter.over:
                    break
                yield getTree(getter, directory)
            result = getter.result
        else:
            result = yield getFiles(getter, options.names, options.parents)
    except PlanError as e:
        raise UsageError(str(e)) from None
    if result.connectionError is not None:
        return EXIT_ERROR
    return EXIT_SOME_FAILED if result.failed else EXIT_OK


# -- list --------------------------------------------------------------------------


def formatEntry(entry: Entry) -> str:
    """An entry as the server shows it: size (``-`` for a folder) and name, folders ending in ``/``."""
    if entry.isDirectory:
        return wire.FOLDER_ENTRY.format(name=entry.name)
    return wire.FILE_ENTRY.format(size=entry.size, name=entry.name)


def formatListing(entries: list[Entry]) -> list[str]:
    return [formatEntry(entry) for entry in entries]


def _listArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", nargs="?", metavar="DIR")


@inlineCallbacks
def _list(session: Session) -> Generator[Deferred[Any], Any, int]:
    """Each entry is printed as it arrives: a listing of any length needs no memory."""
    assert session.client is not None
    streams = session.streams
    try:
        yield session.client.list(session.options.directory, onEntry=lambda entry: streams.out(formatEntry(entry)))
    except ServerError as e:
        streams.err(e.reply)
        return EXIT_SOME_FAILED
    except ClientError as e:
        raise Fatal(f"list failed: {e}") from None
    return EXIT_OK


# -- chat and echo -----------------------------------------------------------------


def _chatArguments(parser: argparse.ArgumentParser) -> None:
    pass


def _chat(session: Session) -> Deferred[int]:
    from echofile.client.chat import runChat

    return runChat(session)


def _echoArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="*", metavar="TEXT")


def _echo(session: Session) -> Deferred[int]:
    from echofile.client.echo import runEcho

    return runEcho(session)


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in [
        Command(
            "get", "get NAME... [-o DIR|-] [-f] [--parents] [-r] [-c]", "fetch files (or, with -r, folders)",
            "Fetch files into a folder, each under its base name (with --parents, under its path; with -r, "
            "whole folders).", "files", "names", _getArguments, _get, _getCheck,
        ),
        Command(
            "list", "list [DIR]", "list a folder of the server (default: its root)",
            "List a folder of the server (default: its root).", "files", "directory", _listArguments, _list,
        ),
        Command(
            "chat", "chat", "chat with the other logged-in users",
            "Interactive chat: each line is said to everyone; /msg USER TEXT, /nick NAME, /who, /help, /quit.",
            "files", None, _chatArguments, _chat,
        ),
        Command(
            "echo", "echo [TEXT...]", "send TEXT (or standard input) to the echo service",
            "Send TEXT (or standard input) to the echo service; print what comes back.", "echo", "text",
            _echoArguments, _echo,
        ),
    ]
}
