"""
echofile.wire is the one home of the reply texts: this module pins each one
to PROTOCOL.md's spelling (the only place the tests spell them out; other
tests import them from echofile.wire), and each format to its parser.
"""

from __future__ import annotations

import pytest

from echofile import wire

#: PROTOCOL.md revision 2, section 2, verbatim.
CONSTANTS = {
    "GREETING": "#Server Ready.",
    "BYE": "#Bye.",
    "HELP": "#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO.",
    "LOGGED_IN": "#You are logged in.",
    "SAID": "#Said.",
    "BUSY": "!Server busy, try again later.",
    "IDLE_TIMEOUT": "!Idle timeout.",
    "LOGIN_TIMEOUT": "!Login timeout.",
    "SHUTTING_DOWN": "!Server shutting down.",
    "LINE_TOO_LONG": "!Line too long.",
    "INVALID_COMMAND": "Invalid command.",
    "INTERNAL_ERROR": "Internal error.",
    "NOT_LOGGED_IN": "You are not logged in.",
    "ALREADY_LOGGED_IN": "Already logged in.",
    "INVALID_USER_NAME": "Invalid user name.",
    "BAD_PASSWORD": "Bad password.",
    "TOO_MANY_FAILURES": "Too many failed attempts.",
    "CHAT_UNAVAILABLE": "Chat is unavailable, try again later.",
    "GUESTS_ONLY_NICK": "Only guest sessions have nicknames.",
}

#: (template, fields, PROTOCOL.md's example or spelling with those fields)
TEMPLATES = [
    (wire.USAGE, {"synopsis": "USER <name>"}, "Usage: USER <name>"),
    (wire.USER_ACCEPTED, {"user": "alice"}, "#User alice accepted, send AUTH."),
    (wire.SENDING, {"name": "notes/today.txt", "size": 1234}, "#Sending notes/today.txt (1234 bytes)."),
    (wire.SENDING_FROM, {"name": "big.iso", "offset": 1000, "size": 234}, "#Sending big.iso from byte 1000 (234 bytes)."),
    (wire.SENT, {"name": "notes/today.txt"}, "#File notes/today.txt sent successfully."),
    (wire.NOT_OPENED, {"name": "<name>"}, "File <name> could not be opened."),
    (wire.FOLDER_NOT_OPENED, {"name": "<dir>"}, "Directory <dir> could not be opened."),
    (wire.OFFSET_PAST_END, {"offset": "<offset>", "name": "<name>", "size": "<size>"},
     "Offset <offset> is past the end of <name> (<size> bytes)."),
    (wire.DIGEST, {"name": "big.iso", "size": 1234, "sha256": "9f86"}, "#SHA-256 of big.iso (1234 bytes): 9f86."),
    (wire.ENTRIES, {"count": 3, "folder": "docs"}, "#3 entries in docs."),
    (wire.FILE_ENTRY, {"size": 1234, "name": "today.txt"}, "1234 today.txt"),
    (wire.FOLDER_ENTRY, {"name": "sub"}, "- sub/"),
    (wire.USERS, {"count": 2}, "#2 users online."),
    (wire.SENT_TO, {"recipient": "bob"}, "#Sent to bob."),
    (wire.NO_SUCH_USER, {"recipient": "<user>"}, "No such user online: <user>."),
    (wire.NICK_IN_USE, {"name": "<name>"}, "Nickname ~<name> is in use."),
    (wire.NOW_NAMED, {"name": "~<name>"}, "#You are now ~<name>."),
]


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_constant_is_protocol_text(name: str) -> None:
    assert getattr(wire, name) == CONSTANTS[name]


@pytest.mark.parametrize("template,fields,expected", TEMPLATES, ids=[t[0] for t in TEMPLATES])
def test_template_is_protocol_text(template: str, fields: dict, expected: str) -> None:
    assert template.format(**fields) == expected


def test_formats_parse_back() -> None:
    assert wire.parseSending(wire.SENDING.format(name="a b", size=7)) == wire.Sending("a b", 7)
    assert wire.parseEntries(wire.ENTRIES.format(count=2, folder="/")) == wire.Entries(2, "/")
    assert wire.parseEntry(wire.FILE_ENTRY.format(size=5, name="x y")) == wire.EntryLine("x y", 5)
    assert wire.parseEntry(wire.FOLDER_ENTRY.format(name="sub")) == wire.EntryLine("sub", None)
    assert wire.parseUsers(wire.USERS.format(count=4)) == 4
    assert wire.parseNick(wire.NOW_NAMED.format(name="~kim")) == "~kim"
    assert wire.isNotOpened(wire.NOT_OPENED.format(name="x"))


def test_error_marks_a_reply_as_an_error() -> None:
    assert wire.error(wire.BAD_PASSWORD) == "!Bad password."
