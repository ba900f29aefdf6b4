"""
The chat on a terminal: Twisted's own line editor (L{HistoricRecvLine},
as Twisted's manhole uses it, over L{insults.ServerProtocol}) with a prompt,
arrow keys, Home/End, Delete and history; incoming lines are printed above
the input line, which is then drawn again as it was.  Each printed line has
a timestamp; the user's own messages are shown under their chat name.

Chosen over prompt_toolkit or readline: it runs on the reactor (no thread,
no second event loop), and it is already installed with Twisted.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.conch.insults import insults
from twisted.conch.recvline import HistoricRecvLine
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from echofile.client.chat import MAX_INPUT, ChatCore
from echofile.client.protocol import FileClient
from echofile.text import sanitize

PROMPT = b"> "
CTRL_C = b"\x03"
CTRL_D = b"\x04"
CTRL_U = b"\x15"


class ChatTerminal(HistoricRecvLine):
    """The chat's terminal view; L{finished} fires once the user is done."""

    ps = (PROMPT, PROMPT)
    terminal: Any = None

    def __init__(self, client: FileClient, name: str, clock: Any) -> None:
        self._clock = clock
        self._core = ChatCore(client, self, name)
        self.finished: Deferred[None] = self._core.finished
        self.closed: Deferred[None] = Deferred()

    # -- the view --------------------------------------------------------------

    def show(self, text: str) -> None:
        self._above(text)

    def own(self, text: str) -> None:
        self._above(text)

    def note(self, text: str) -> None:
        self._above(f"-- {text}")

    def _above(self, text: str) -> None:
        """Print a line above the input line, then draw the input line again, cursor where it was."""
        if self.terminal is None:
            return
        stamp = time.strftime("%H:%M", time.localtime(self._clock.seconds()))
        self.terminal.write(b"\r")
        self.terminal.eraseLine()
        self.terminal.write(f"[{stamp}] {sanitize(text)}\n".encode("utf-8", "replace"))
        self.drawInputLine()
        back = len(self.lineBuffer) - self.lineBufferIndex
        if back:
            self.terminal.cursorBackward(back)

    # -- the editor ------------------------------------------------------------

    def initializeScreen(self) -> None:
        """Unlike RecvLine's, leave the screen as it is: just the prompt."""
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    def keystrokeReceived(self, keyID: Any, modifier: Any) -> None:
        if keyID == CTRL_D and not self.lineBuffer or keyID == CTRL_C:
            self.terminal.nextLine()
            self._core.quit()
        elif keyID == CTRL_U:
            self.handle_HOME()
            self.terminal.eraseToLineEnd()
            self.lineBuffer, self.lineBufferIndex = [], 0
        elif isinstance(keyID, bytes) and len(keyID) == 1 and keyID[0] >= 0x80:
            self.characterReceived(keyID, False)  # part of a UTF-8 character
        else:
            super().keystrokeReceived(keyID, modifier)

    def characterReceived(self, ch: bytes, moreCharactersComing: bool) -> None:
        if len(self.lineBuffer) >= MAX_INPUT:
            self.terminal.write(b"\a")  # full: refuse the key, never cut the line later
            return
        super().characterReceived(ch, moreCharactersComing)

    def handle_TAB(self) -> None:
        self.characterReceived(b" ", False)

    def lineReceived(self, line: bytes) -> None:
        self._core.typed(line.decode("utf-8", "replace"))
        self.drawInputLine()

    def leave(self) -> None:
        """Before the terminal goes back to the shell: no prompt left behind, insert mode off."""
        if self.terminal is not None:
            self.terminal.write(b"\r")
            self.terminal.eraseLine()
            self.terminal.resetModes([insults.modes.IRM])

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.terminal = None
        self._core.quit()
        if not self.closed.called:
            self.closed.callback(None)


def terminalChat(client: FileClient, name: str, clock: Any) -> tuple[insults.ServerProtocol, ChatTerminal]:
    """The protocol to run on standard input/output, and the chat view inside it."""
    view = ChatTerminal(client, name, clock)
    return insults.ServerProtocol(lambda: view), view
