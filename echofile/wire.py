"""
The file protocol's reply texts: the single home of every reply the server
says (PROTOCOL.md section 2, one constant or formatter per reply) and of the
parsers the client reads them with, each format next to its parser.

Formatters take names already made printable (L{echofile.text.sanitize}):
this module only spells the wire format.  Every parser takes one reply line without its line break and returns its
fields, or C{None} when the line is not that reply.  Numbers are bounded: a
count or size of more than L{MAX_DIGITS} digits raises L{MalformedReply}
rather than making a huge integer (or Python's digit-limit ValueError).
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: Like RESUME's offset: 20 digits hold any file size a file system has.
MAX_DIGITS = 20

GREETING = "#Server Ready."
BYE = "#Bye."
HELP = "#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO."
LOGGED_IN = "#You are logged in."
SAID = "#Said."

# Replies that end a session (the server's last word).
BUSY = "!Server busy, try again later."
IDLE_TIMEOUT = "!Idle timeout."
LOGIN_TIMEOUT = "!Login timeout."
SHUTTING_DOWN = "!Server shutting down."
LINE_TOO_LONG = "!Line too long."

# Error replies without their leading "!" (the text a CommandError carries).
INVALID_COMMAND = "Invalid command."
INTERNAL_ERROR = "Internal error."
NOT_LOGGED_IN = "You are not logged in."
ALREADY_LOGGED_IN = "Already logged in."
INVALID_USER_NAME = "Invalid user name."
BAD_PASSWORD = "Bad password."
TOO_MANY_FAILURES = "Too many failed attempts."
CHAT_UNAVAILABLE = "Chat is unavailable, try again later."
GUESTS_ONLY_NICK = "Only guest sessions have nicknames."


# Replies with fields: str.format templates, filled with names already made
# printable; each one with a parser below is read by the client.
USAGE = "Usage: {synopsis}"  #: an error without its "!"
USER_ACCEPTED = "#User {user} accepted, send AUTH."
SENDING = "#Sending {name} ({size} bytes)."  #: FILE's header (parseSending)
SENDING_FROM = "#Sending {name} from byte {offset} ({size} bytes)."  #: RESUME's: size is what follows offset
SENT = "#File {name} sent successfully."  #: the trailer after a body
NOT_OPENED = "File {name} could not be opened."  #: FILE's, RESUME's, HASH's error (isNotOpened)
FOLDER_NOT_OPENED = "Directory {name} could not be opened."
OFFSET_PAST_END = "Offset {offset} is past the end of {name} ({size} bytes)."
DIGEST = "#SHA-256 of {name} ({size} bytes): {sha256}."
ENTRIES = "#{count} entries in {folder}."  #: LIST's header (parseEntries)
FILE_ENTRY = "{size} {name}"  #: a listing line (parseEntry)
FOLDER_ENTRY = "- {name}/"  #: a folder's listing line (parseEntry)
USERS = "#{count} users online."  #: WHO's header (parseUsers)
SENT_TO = "#Sent to {recipient}."
NO_SUCH_USER = "No such user online: {recipient}."
NICK_IN_USE = "Nickname ~{name} is in use."
NOW_NAMED = "#You are now {name}."  #: NICK's answer, the name with its "~" (parseNick)


def error(text: str) -> str:
    """An error reply line from its text."""
    return "!" + text


class CommandError(Exception):
    """
    A command failed in a way the client is told about.

    @ivar reply: the reply text without the leading ``!``.
    @ivar closes: the session ends after this reply.
    """

    def __init__(self, reply: str, closes: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.closes = closes


_SENDING = re.compile(r"#Sending (.*) \(([0-9]+) bytes\)\.")
_ENTRIES = re.compile(r"#([0-9]+) entries in (.*)\.")
_ENTRY = re.compile(r"([0-9]+|-) (.+)")
_USERS = re.compile(r"#([0-9]+) users? online\.")
_NICK = re.compile(r"#You are now (~.+)\.")
_NOT_OPENED = re.compile(r"File (.*) could not be opened\.")
_HASHED = re.compile(r"#SHA-256 of (.*) \(([0-9]+) bytes\): ([^ ]*)\.")
_RESUMING = re.compile(r"#Sending (.*) from byte ([0-9]+) \(([0-9]+) bytes\)\.")
_DIGEST = re.compile(r"[0-9a-f]{64}")
INVALID_COMMAND = "Invalid command."


class MalformedReply(ValueError):
    """A reply of a known shape with an impossible field (a 5,000-digit size)."""


class Sending(NamedTuple):
    name: str
    size: int


class Entries(NamedTuple):
    count: int
    directory: str


class EntryLine(NamedTuple):
    """One listing line; C{size} is C{None} for a folder, whose C{name} then has no trailing ``/``."""

    name: str
    size: int | None


class Hashed(NamedTuple):
    """HASH's answer: the file's size and the SHA-256 of its bytes (64 lowercase hex digits)."""

    name: str
    size: int
    sha256: str


class Resuming(NamedTuple):
    """RESUME's header: the body starts at byte C{offset} and holds C{remaining} bytes."""

    name: str
    offset: int
    remaining: int


def number(digits: str, what: str) -> int:
    """A decimal field of a reply, refused when longer than any real one."""
    if len(digits) > MAX_DIGITS:
        raise MalformedReply(f"{what} of {len(digits)} digits")
    return int(digits)


def parseSending(line: str) -> Sending | None:
    """``#Sending <name> (<size> bytes).``"""
    match = _SENDING.fullmatch(line)
    if match is None:
        return None
    return Sending(match.group(1), number(match.group(2), "file size"))


def parseEntries(line: str) -> Entries | None:
    """``#<count> entries in <dir>.``"""
    match = _ENTRIES.fullmatch(line)
    if match is None:
        return None
    return Entries(number(match.group(1), "entry count"), match.group(2))


def parseEntry(line: str) -> EntryLine | None:
    """``<size> <name>`` or ``- <name>/``."""
    match = _ENTRY.fullmatch(line)
    if match is None:
        return None
    size, name = match.groups()
    if size == "-":
        return EntryLine(name.removesuffix("/"), None)
    return EntryLine(name, number(size, "entry size"))


def parseUsers(line: str) -> int | None:
    """``#<count> users online.`` (or ``user online``): the count."""
    match = _USERS.fullmatch(line)
    if match is None:
        return None
    return number(match.group(1), "user count")


def parseNick(line: str) -> str | None:
    """``#You are now ~<name>.``: the new chat name, with its ``~``."""
    match = _NICK.fullmatch(line)
    return None if match is None else match.group(1)


def parseHashed(line: str) -> Hashed | None:
    """``#SHA-256 of <name> (<size> bytes): <64 lowercase hex>.``; any other digest is malformed."""
    match = _HASHED.fullmatch(line)
    if match is None:
        return None
    name, size, digest = match.groups()
    if _DIGEST.fullmatch(digest) is None:
        shown = digest[:80].encode("ascii", "backslashreplace").decode("ascii")
        raise MalformedReply(f"SHA-256 digest that is not 64 lowercase hex digits: {shown!r}")
    return Hashed(name, number(size, "file size"), digest)


def parseResuming(line: str) -> Resuming | None:
    """``#Sending <name> from byte <offset> (<remaining> bytes).``"""
    match = _RESUMING.fullmatch(line)
    if match is None:
        return None
    return Resuming(match.group(1), number(match.group(2), "offset"), number(match.group(3), "body size"))


def isNotOpened(reply: str) -> bool:
    """Is this error reply (without ``!``) FILE's ``File <name> could not be opened.``?"""
    return _NOT_OPENED.fullmatch(reply) is not None


#: The server's default longest command line (PROTOCOL.md: 4096 bytes, not counting the line break).
MAX_COMMAND_LINE = 4096
