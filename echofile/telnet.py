"""
Remove telnet IAC command sequences from an incoming byte stream.

The file protocol is meant to be used from a plain telnet client, which may
send option negotiation (``IAC DO x``), sub-negotiation (``IAC SB ... IAC SE``)
or commands such as interrupt (``IAC IP``) in the middle of a line.  RFC 854
defines those sequences; we drop them before line splitting so that they
never become command text.  ``IAC IAC`` stands for one literal 0xFF byte.

Twisted's own ``twisted.conch.telnet`` does this too, but as a transport
wrapper that also escapes 0xFF in everything written: that would corrupt the
raw file bodies this protocol sends, so only the receiving half is done here.
"""

from __future__ import annotations

IAC = 0xFF
SB = 0xFA
SE = 0xF0
#: WILL, WONT, DO, DONT take one option byte.
_NEGOTIATION = frozenset((0xFB, 0xFC, 0xFD, 0xFE))

# Parser states.
_DATA, _COMMAND, _OPTION, _SUBNEG, _SUBNEG_IAC = range(5)


class TelnetCommandFilter:
    """
    A streaming filter: feed it chunks, get back the data bytes.

    State is kept between chunks, so a sequence split across packets is
    still recognised.  Sub-negotiation data is bounded by the caller's line
    limit only indirectly (it is discarded as it arrives), so it costs no
    memory.
    """

    def __init__(self) -> None:
        self._state = _DATA

    def feed(self, data: bytes) -> bytes:
        # Fast path: the overwhelmingly common case has no IAC at all.
        if self._state == _DATA and IAC not in data:
            return data
        out = bytearray()
        state = self._state
        for byte in data:
            if state == _DATA:
                if byte == IAC:
                    state = _COMMAND
                else:
                    out.append(byte)
            elif state == _COMMAND:
                if byte == IAC:
                    out.append(IAC)
                    state = _DATA
                elif byte in _NEGOTIATION:
                    state = _OPTION
                elif byte == SB:
                    state = _SUBNEG
                else:
                    state = _DATA
            elif state == _OPTION:
                state = _DATA
            elif state == _SUBNEG:
                if byte == IAC:
                    state = _SUBNEG_IAC
            else:  # _SUBNEG_IAC
                state = _DATA if byte == SE else _SUBNEG
        self._state = state
        return bytes(out)
