"""
The one text policy: what may be repeated to a client, shown on a terminal,
listed, or written to a log.

Everything the server (or the client) shows that came from the other side
passes through L{sanitize}; a directory entry is listed or served by name
only if L{isClean}.  Unsafe are C0 and C1 controls (ESC, CR, LF, CSI U+009B
...), DEL, the line and paragraph separators, and the bidirectional marks,
embeddings, overrides and isolates that could disguise text on a terminal.
0xFF (telnet IAC) never occurs in UTF-8 output, so text that was valid
UTF-8 on the way in cannot smuggle an IAC byte out.
"""

from __future__ import annotations

import re

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")


def sanitize(text: str) -> str:
    """C{text} fit to show as (part of) one line: every unsafe character becomes ``?``."""
    return UNSAFE.sub("?", text)


def isClean(name: str) -> bool:
    """
    Is C{name} a name we are willing to show and serve: valid UTF-8 (no
    surrogate-escaped bytes from the file system) with no unsafe character?
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return UNSAFE.search(name) is None
