"""
The listen backlog echofile's stream endpoints get when their description names none.

Twisted's C{tcp:}, C{tcp6:}, C{ssl:}, C{tls:} and C{unix:} endpoints listen
with a backlog of 50 unless told otherwise: the kernel then holds at most
50 finished handshakes the server has not accepted yet, and drops the SYN of
the 51st (the client retries it after 1 s, then 3 s, ...).  A burst of
connects, or any moment the reactor is busy for a few milliseconds, hit
that at once.  The kernel caps what is asked at C{net.core.somaxconn}
(4096 on current Linux), so asking for more costs nothing where it is lower.
"""

from __future__ import annotations

from typing import Callable, TypeVar

#: Asked for when a description has no C{backlog=} of its own (the kernel caps it at net.core.somaxconn).
DEFAULT_BACKLOG = 4096

_Parsed = TypeVar("_Parsed")


def withDefaultBacklog(description: str, parse: Callable[[str], _Parsed]) -> _Parsed:
    """
    C{parse(description)} (C{parse} is C{serverFromString} or
    C{strports.service} with its other arguments bound), with
    C{backlog=DEFAULT_BACKLOG} put right after the endpoint type, where the
    description's own C{backlog=}, which comes later, still wins (a later
    keyword overrides an earlier one).  Under C{haproxy:} it reaches the
    wrapped endpoint.  Endpoints that take no backlog (C{systemd:}: the
    socket is made elsewhere) refuse that one, and are parsed again as
    written; the others are parsed once (an C{ssl:} parse reads its key and
    certificate files).
    """
    kind, colon, rest = description.partition(":")
    if colon:
        try:
            return parse(f"{kind}:backlog={DEFAULT_BACKLOG}:{rest}")
        except (TypeError, ValueError):  # an endpoint without a backlog argument (or a bad description)
            pass
    return parse(description)
