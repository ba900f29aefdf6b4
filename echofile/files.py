"""
The telnet-friendly file protocol: parse a line, dispatch to ``cmd_<NAME>``,
reply.  File access is the avatar's job (L{echofile.share}), password checks
the portal's (L{echofile.auth}); this module only speaks the wire format.

Replies start with ``#`` (success) or ``!`` (error) and end in CRLF.  Every
failure is an exception: L{CommandError} carries its reply text, and
L{FileSession._commandFailed} is the one place that turns any exception
into a reply (or, for the errors that end a session, into a goodbye).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress, IHalfCloseableProtocol, IHandshakeListener, IReactorTime,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from echofile.addresses import LOOPBACK, Network
from echofile.admission import Admission, AdmissionPolicy
from echofile.auth import DEFAULT_USER, countLockedOut, countLogin, isGuest, login
from echofile.chat import ChatUnavailable, EventQueue, IChat, IChatListener, NicknameInUse, NotOnline
from echofile.eventlog import LogBudget, loggable
from echofile.hashing import FileDigest, FileHasher, HashUnavailable
from echofile.lockout import LoginPenalties
from echofile.limits import ConnectionLimiter, GracefulClose, SessionTimer, cancelPending, closeWithin
from echofile.proxy import HealthCheck
from echofile.shutdown import SessionTracker
from echofile.listing import Listing, ListingSender
from echofile.share import IShare, NotAvailable, OpenedFile
from echofile.telnet import TelnetCommandFilter
from echofile.text import sanitize
from echofile.tls import cleartextOverNetwork
from echofile.transfer import BodySender, TransferInterrupted

GREETING = "#Server Ready."
HELP = "#Commands: AUTH, FILE, HASH, HELP, LIST, MSG, NICK, QUIT, RESUME, SAY, USER, WHO."
BUSY = "!Server busy, try again later."
CHAT_UNAVAILABLE = "Chat is unavailable, try again later."
MAX_AUTH_FAILURES = 3
#: Input read ahead (not run) while a HASH waits, before the transport stops reading.
HELD_INPUT = 64 * 1024

_COMMAND_LINE = re.compile(r"([^ \t]+)[ \t]*(.*)", re.DOTALL)
_USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: A RESUME offset: ASCII decimal digits only (int() would also take "+5", " 5", "1_0" and "٣").
_OFFSET = re.compile(r"[0-9]{1,20}", re.ASCII)
_NICKNAME = re.compile(r"[A-Za-z0-9._-]{1,32}")


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


@implementer(IChatListener, IHalfCloseableProtocol, IHandshakeListener)
class FileSession(LineReceiver):
    """
    One client session of the file protocol.

    Reading is held (the LineReceiver itself is paused, not only the
    transport, so already buffered pipelined lines wait too) while a command
    is still running (AUTH's check and failure delay, a FILE body) and while
    the transport's write buffer is full.  Replies therefore come in command
    order, and a client that does not read cannot make the server buffer
    without bound.

    Chat events that arrive while a body is being sent or while the client
    is not reading wait in a bounded queue and follow the next complete reply.
    """

    delimiter = b"\n"
    _log = Logger()

    def __init__(self, factory: "FilesFactory") -> None:
        self.factory = factory
        self._clock = factory.clock
        self._peerKey = ""
        self._peerAddress: IAddress | None = None
        self._admission: Admission | None = None
        self._admitted = False
        self.MAX_LENGTH = factory.maxLine + 1  # room for the CR of CR LF
        self._telnet = TelnetCommandFilter()
        # Why input is held ("command", "output"); a frozenset until the first hold,
        # which most sessions reach, but idle ones never do.
        self._holds: set[str] | frozenset[str] = frozenset()
        self._readingPaused = False  # did a hold pause the transport?
        self._producing = False  # are we the transport's registered producer?
        self._ending = False
        self._connected = False
        self._closing: GracefulClose | None = None
        self._timer = SessionTimer(self._clock, factory.idleTimeout, self.timeoutConnection)
        self._transfer: BodySender | ListingSender | None = None  # a body or listing being sent
        # None after a refused USER: the next AUTH must fail, not fall back to guest.
        self._selectedUser: str | None = DEFAULT_USER
        self._failures = 0
        self.avatar: IShare | None = None
        self._logout: Callable[[], None] | None = None
        self._events = EventQueue()
        self._shutdownAfterTransfer = False
        self._inputEnded = False
        self._logBudget: LogBudget | None = None  # made by the first event that needs it
        self._hashing: Deferred[FileDigest] | None = None  # a HASH waiting for its digest

    # -- connection life cycle -------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        # The connection counts against the caps from now on; the session
        # starts once it is usable: over TLS once the handshake is done (a
        # greeting before it would stall it, see echofile.tls), and behind a
        # PROXY-protocol balancer once the header with the client's address
        # arrived (see echofile.proxy and echofile.admission).
        self._admission = Admission(
            self.factory.admission, self.transport, self._start, lambda: self.endSession(BUSY),
        )
        self._admission.begin()

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: TLS is up."""
        if self._admission is not None:
            self._admission.handshakeCompleted()

    def _start(self, peer: IAddress, key: str) -> None:
        """
        Greet the admitted client.

        @param peer: the client's address (from the PROXY header, if any).
        @param key: its key for the caps, lock-outs and logs.
        """
        if not self._connected:  # gone while we waited for TLS or the header
            return
        self._peerAddress = peer
        self._peerKey = key
        self._admitted = True
        if isinstance(peer, HealthCheck):
            self._log.info("files: connection from {peer} (a PROXY health check)", peer=self._peer)
        else:
            self._log.info("files: connection from {peer}", peer=self._peer)
        self._registerAsProducer()
        self._timer.start()
        if self.factory.loginTimeout is not None:
            # One deadline from the connection's start: the TLS handshake and the
            # PROXY header wait were part of it.
            assert self._admission is not None
            remaining = max(0.0, self.factory.loginTimeout - self._admission.elapsed())
            self._timer.setDeadline(remaining, self._loginTimedOut)
        self.reply(GREETING)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._connected = False
        if self._admission is not None:
            self._admission.end()
        self._ending = True
        self._timer.stop()
        cancelPending(self._closing)
        self._cancelHash()
        self._logOut()
        self.factory.sessions.discard(self)
        if self._logBudget is not None:
            self._logBudget.close(self._peer)
        if self._admitted:
            self._admitted = False
            self._log.info("files: connection from {peer} closed", peer=self._peer)

    @property
    def _peer(self) -> str:
        """The peer as it may be logged (a PROXY header can make it any text)."""
        return loggable(self._peerKey)

    def _event(self, level: LogLevel, format: str, **kwargs: Any) -> None:
        """
        An info/warn event the client can make us repeat (per command):
        through the session's log budget (L{echofile.eventlog}).
        """
        if self._logBudget is None:
            self._logBudget = LogBudget(self._log, self._clock)
        self._logBudget.emit(level, format, peer=self._peer, **kwargs)

    def timeoutConnection(self) -> None:
        if self._transfer is not None:
            # Nothing may be said inside a body; a stalled reader is cut off.
            self._log.info("files: {peer} stalled during a transfer, aborting", peer=self._peer)
            self._ending = True
            self.transport.abortConnection()
            return
        self._log.info("files: {peer} idle, closing", peer=self._peer)
        self.endSession("!Idle timeout.")

    def _loginTimedOut(self) -> None:
        self._log.info("files: {peer} did not log in in time, closing", peer=self._peer)
        self.endSession("!Login timeout.")

    def shutdown(self) -> None:
        """The server is stopping: say so now, or right after the body being sent."""
        if not self._admitted and not self._ending:
            # Still in the TLS handshake or waiting for the PROXY header: nothing can be said.
            self._ending = True
            self.transport.loseConnection()
        elif self._transfer is not None:
            self._shutdownAfterTransfer = True
        else:
            self.endSession("!Server shutting down.")

    def abort(self) -> None:
        """Cut the connection now (a body in flight stays incomplete, without its trailer)."""
        self._ending = True
        self.transport.abortConnection()

    def endSession(self, lastLine: str | None) -> None:
        """
        Say C{lastLine} (if any), run no further command, and close without
        a reset: the client gets everything sent so far, whatever it
        pipelined (L{echofile.limits.GracefulClose}).
        """
        if self._ending:
            return
        self._ending = True
        self.paused = True
        self._timer.stop()
        self._cancelHash()
        self._logOut()
        if lastLine is not None:
            self.reply(lastLine)
        self._unregisterAsProducer()
        self._closing = closeWithin(self.transport, self._clock, inputEnded=self._inputEnded)

    def _cancelHash(self) -> None:
        """Nobody will read the digest: give back its place in the queue (or its thread) and descriptor."""
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            hashing.cancel()

    def _logOut(self) -> None:
        """Leave presence at once (the connection itself may linger a little)."""
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    # -- flow control ----------------------------------------------------------

    def _registerAsProducer(self) -> None:
        self.transport.registerProducer(self, True)
        self._producing = True

    def _unregisterAsProducer(self) -> None:
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def _hold(self, reason: str, keepReading: bool = False) -> None:
        """
        Run no further command until L{_release}.  Unless C{keepReading},
        the transport stops reading too; with it, input is still read (so a
        client that goes away is noticed) but only up to L{HELD_INPUT}.
        """
        if not self._holds:
            self.paused = True
            self._holds = set()
        if not keepReading:
            self._pauseReading()
        self._holds.add(reason)

    def _pauseReading(self) -> None:
        if not self._readingPaused:
            self._readingPaused = True
            self.transport.pauseProducing()

    def _release(self, reason: str) -> None:
        if reason in self._holds:
            self._holds.discard(reason)  # type: ignore[union-attr]
        if self._holds or self._ending or not self._connected:
            return
        self.paused = False
        if self._readingPaused:
            self._readingPaused = False
            if not self._inputEnded:
                self.transport.resumeProducing()
        self.dataReceived(b"")  # run lines that arrived meanwhile
        self._closeIfInputDone()

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: stop taking commands."""
        self._hold("output")

    def resumeProducing(self) -> None:
        self._release("output")
        self._flushEvents()

    def stopProducing(self) -> None:
        self._ending = True

    # -- input -----------------------------------------------------------------

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side (``nc -N``, a script's EOF):
        answer every command it sent, an unterminated last line included,
        then close.
        """
        if self._ending:
            # We are closing: the client closed its side too, so the close is safe now.
            if self._closing is not None and not self._inputEnded:
                self._inputEnded = True
                self._closing.peerClosed()
            return
        if self._inputEnded:
            return
        self._inputEnded = True
        if self._buffer:
            self.dataReceived(b"\n")
        self._closeIfInputDone()

    def writeConnectionLost(self) -> None:
        """Our half-close is done; we keep reading (and discarding) until the client closes."""
        if self._closing is None:  # not ours: nothing more can be said
            self._ending = True
            self.transport.loseConnection()

    def _closeIfInputDone(self) -> None:
        # Inside LineReceiver's loop, lines may still wait: dataReceived asks again after it.
        if self._inputEnded and not self._holds and not self._ending and not self._busyReceiving:
            self._log.info("files: {peer} finished sending, closing", peer=self._peer)
            self.endSession(None)

    def dataReceived(self, data: bytes) -> None:
        if self._ending:
            return  # closing: what the client still sends is read and dropped
        super().dataReceived(self._telnet.feed(data))
        if self._inputEnded:
            self._closeIfInputDone()
        elif self._holds and len(self._buffer) > HELD_INPUT:
            self._pauseReading()  # enough pipelined input while a HASH waits

    def lineLengthExceeded(self, line: bytes) -> None:
        self._log.info("files: {peer} sent an over-long line, closing", peer=self._peer)
        self.endSession("!Line too long.")

    def lineReceived(self, line: bytes) -> None:
        if self._ending:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.factory.maxLine:
            self.lineLengthExceeded(line)
            return
        if not line.strip(b" \t"):
            return  # an empty line gets no reply and is no activity
        self._timer.touch()
        try:
            text = line.decode("utf-8").strip(" \t")
        except UnicodeDecodeError:
            self.reply("!Invalid command.")
            return
        self._run(text)

    def _run(self, text: str) -> None:
        """Run one command; a Deferred result holds further input until it fires."""
        try:
            result = self._dispatch(text)
        except Exception:
            self._commandFailed(Failure())
            return
        if isinstance(result, Deferred):
            self._hold("command")
            result.addErrback(self._commandFailed)
            result.addBoth(lambda _: self._release("command"))

    def _dispatch(self, text: str) -> Deferred[None] | None:
        match = _COMMAND_LINE.match(text)
        assert match is not None  # text is non-empty and has no leading blank
        command, argument = match.group(1), match.group(2)
        handler = None
        if command.isascii() and command.isalpha():
            handler = getattr(self, "cmd_" + command.upper(), None)
        if handler is None:
            raise CommandError("Invalid command.")
        return handler(argument)

    def _commandFailed(self, failure: Failure) -> None:
        """The one place where an exception becomes what the client sees."""
        if failure.check(CancelledError):
            return  # a HASH of a session that ended meanwhile: nobody to tell
        if not self._connected:
            if not failure.check(CommandError, TransferInterrupted):
                self._log.failure("files: command from {peer} failed after it left", failure, peer=self._peer)
            return
        if failure.check(CommandError):
            if self._ending:  # the session already said its last word
                return
            error = failure.value
            if error.closes:
                self.endSession("!" + error.reply)
            else:
                self.reply("!" + error.reply)
        elif failure.check(TransferInterrupted, ConnectionDone, ConnectionLost):
            self._log.warn("files: transfer to {peer} cut short: {reason}", peer=self._peer, reason=loggable(failure.value))
            self._ending = True
            self._closing = closeWithin(self.transport, self._clock, inputEnded=self._inputEnded)
        else:
            self._log.failure("files: command from {peer} failed", failure, peer=self._peer)
            if not self._ending:
                self.reply("!Internal error.")

    # -- output ----------------------------------------------------------------

    def reply(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def _replyLines(self, lines: list[str]) -> None:
        """A header and the lines it announces (LIST, WHO), in one write: no event can come between."""
        self.transport.write("".join(line + "\r\n" for line in lines).encode("utf-8"))

    def deliverEvent(self, line: str) -> None:
        """A chat event: now if the client can take it, else after the body or once it reads."""
        if self._ending:
            return
        if self._transfer is not None or "output" in self._holds or self._events:
            self._events.push(line)
        else:
            self.reply(line)

    def _flushEvents(self) -> None:
        if self._transfer is None and not self._ending and self._events:
            for line in self._events.drain():
                self.reply(line)

    def _requireLogin(self) -> IShare:
        if self.avatar is None:
            raise CommandError("You are not logged in.")
        return self.avatar

    # -- commands --------------------------------------------------------------

    def cmd_HELP(self, argument: str) -> None:
        self.reply(HELP)

    def cmd_QUIT(self, argument: str) -> None:
        self.endSession("#Bye.")

    def cmd_USER(self, argument: str) -> None:
        if not argument or not _USER_NAME.fullmatch(argument):
            self._selectedUser = None
            raise CommandError("Invalid user name." if argument else "Usage: USER <name>")
        self._selectedUser = argument
        self.reply(f"#User {argument} accepted, send AUTH.")

    def cmd_AUTH(self, password: str) -> Deferred[None]:
        if self.avatar is not None:
            raise CommandError("Already logged in.")
        if not password:
            raise CommandError("Usage: AUTH <password>")
        user = self._selectedUser
        penalties = self.factory.penalties
        if penalties is not None and penalties.isLockedOut(self._peerKey):
            self._event(LogLevel.info, "files: AUTH from locked-out {peer} refused")
            countLockedOut()
            return self._answerLater(CommandError("Too many failed attempts.", closes=True))
        if user is None:
            d: Deferred[Any] = fail(UnauthorizedLogin("AUTH after a refused USER")).addBoth(countLogin)
            user = "(refused name)"
        else:
            d = login(self.factory.portal, user, password, self)
        d.addCallbacks(self._loggedIn, self._loginFailed, errbackArgs=(user,))
        return d

    def _loggedIn(self, result: tuple[Any, IShare, Callable[[], None]]) -> None:
        _, avatar, logout = result
        if not self._connected or self._ending:
            logout()
            return
        self._timer.clearDeadline()
        self.avatar, self._logout = avatar, logout
        self._log.info("files: {peer} logged in as {user}", peer=self._peer, user=loggable(avatar.user))
        if self._peerAddress is not None and cleartextOverNetwork(self.transport, self._peerAddress):
            self._log.warn(
                "files: {user} logged in from {peer} over plain TCP: the password crossed the network "
                "in clear text; serve --files on a TLS endpoint (ssl:/tls:, see docs/deploy.md)",
                peer=self._peer, user=loggable(avatar.user),
            )
        self.reply("#You are logged in.")

    def _loginFailed(self, failure: Failure, user: str) -> Deferred[None]:
        """
        Every failure to check a password is a failed login: delayed, counted
        here and per address.  A checker that broke (rather than said no) is
        logged, but the client learns no more than from a wrong password, so
        a broken check can never be used to guess fast or to tell names apart.
        """
        if not failure.check(UnauthorizedLogin):
            self._log.failure(
                "files: checking the password of {user} from {peer} failed", failure, peer=self._peerKey, user=user,
            )
        self._failures += 1
        if self.factory.penalties is not None:
            self.factory.penalties.recordFailure(self._peerKey)
        self._event(
            LogLevel.info, "files: {peer} failed to log in as {user} ({failures} on this connection)",
            user=loggable(user), failures=self._failures,
        )
        if self._failures >= MAX_AUTH_FAILURES:
            error = CommandError("Too many failed attempts.", closes=True)
        else:
            error = CommandError("Bad password.")
        return self._answerLater(error)

    def _answerLater(self, error: CommandError) -> Deferred[None]:
        """Fail with C{error} after the AUTH failure delay, so guessing stays slow."""

        def answer() -> None:
            raise error

        return deferLater(self._clock, self.factory.authFailureDelay, answer)

    def _open(self, share: IShare, name: str) -> OpenedFile:
        try:
            return share.open(name)
        except NotAvailable:
            raise CommandError(f"File {sanitize(name)} could not be opened.") from None

    def cmd_FILE(self, name: str) -> Deferred[None]:
        share = self._requireLogin()
        if not name:
            raise CommandError("Usage: FILE <name>")
        opened = self._open(share, name)
        return self._sendBody(share, opened, name, f"#Sending {sanitize(name)} ({opened.size} bytes).")

    def cmd_RESUME(self, argument: str) -> Deferred[None]:
        share = self._requireLogin()
        match = _COMMAND_LINE.match(argument)
        if match is None or not match.group(2) or not _OFFSET.fullmatch(match.group(1)):
            raise CommandError("Usage: RESUME <offset> <name>")
        offset, name = int(match.group(1)), match.group(2)
        opened = self._open(share, name)
        if offset > opened.size:
            opened.close()
            raise CommandError(f"Offset {offset} is past the end of {sanitize(name)} ({opened.size} bytes).")
        header = f"#Sending {sanitize(name)} from byte {offset} ({opened.size - offset} bytes)."
        return self._sendBody(share, opened, name, header, offset, "RESUME")

    def _sendBody(self, share: IShare, opened: OpenedFile, name: str, header: str, offset: int = 0, command: str = "FILE") -> Deferred[None]:
        """The header, the body from C{offset} on, CRLF and the trailer (FILE, RESUME)."""
        shown = sanitize(name)
        self.reply(header)
        started = self._clock.seconds()
        self._transfer = BodySender(opened, onProgress=lambda _: self._timer.touch(), offset=offset, command=command)
        self._unregisterAsProducer()
        d = self._transfer.beginSending(self.transport)

        def sent(size: int) -> None:
            self._sendingEnded()
            self.transport.write(b"\r\n")
            self.reply(f"#File {shown} sent successfully.")
            self._replyComplete()
            self._event(
                LogLevel.info, "files: sent {file} ({size} bytes) to {user}@{peer} in {duration:.3f}s",
                file=loggable(opened.path), size=size, offset=offset, user=loggable(share.user),
                duration=self._clock.seconds() - started,
            )

        def failed(failure: Failure) -> Failure:
            self._transfer = None
            return failure

        d.addCallbacks(sent, failed)
        return d

    def cmd_HASH(self, name: str) -> None:
        share = self._requireLogin()
        if not name:
            raise CommandError("Usage: HASH <name>")
        opened = self._open(share, name)
        path = opened.path
        cannotOpen = CommandError(f"File {sanitize(name)} could not be opened.")
        try:
            d = self.factory.hashes.digest(opened)
        except HashUnavailable:
            raise cannotOpen from None
        self._hashing = d
        # The wait may be long (the job cap): keep reading, so that a client
        # that goes away is noticed and its job cancelled at once.
        self._hold("hash", keepReading=True)

        def answer(digest: FileDigest) -> None:
            self._hashing = None
            self._timer.touch()  # waiting for the digest was no idleness of the client
            self._event(
                LogLevel.info, "files: SHA-256 of {file} ({size} bytes) for {user}@{peer}",
                file=loggable(path), size=digest.size, user=loggable(share.user),
            )
            if not self._ending:
                self.reply(f"#SHA-256 of {sanitize(name)} ({digest.size} bytes): {digest.sha256}.")

        def unavailable(failure: Failure) -> None:
            self._hashing = None
            failure.trap(HashUnavailable)
            raise cannotOpen

        d.addCallbacks(answer, unavailable)
        d.addErrback(self._commandFailed)
        d.addBoth(lambda _: self._release("hash"))

    def cmd_LIST(self, name: str) -> Deferred[None]:
        share = self._requireLogin()
        shown = sanitize(name) if name else "/"

        def notOpened(failure: Failure) -> None:
            failure.trap(NotAvailable)
            raise CommandError(f"Directory {shown} could not be opened.")

        # Read off the reactor thread (and shared with other sessions listing the
        # same folder); the session reads no further command until it is sent.
        d = share.listing(name or "/")
        d.addCallbacks(self._sendListing, notOpened, callbackArgs=(shown,))
        return d

    def _sendListing(self, listing: Listing, shown: str) -> Deferred[None] | None:
        """Stream the header and the entries as the client reads; no event comes in between."""
        if not self._connected or self._ending:
            return None
        sender = ListingSender(f"#{listing.count} entries in {shown}.\r\n".encode("utf-8"), listing,
                               onProgress=lambda _: self._timer.touch())
        self._transfer = sender
        self._unregisterAsProducer()
        if "output" in self._holds:  # the transport pauses the listing now, not the session
            self._holds.discard("output")  # type: ignore[union-attr]
        d = sender.beginSending(self.transport)

        def failed(failure: Failure) -> Failure:
            self._transfer = None
            return failure

        def sent(count: int) -> None:
            self._sendingEnded()
            self._replyComplete()

        d.addCallbacks(sent, failed)
        return d

    def _sendingEnded(self) -> None:
        """The body or listing is handed over: the session is the transport's producer again."""
        self._transfer = None
        self._registerAsProducer()

    def _replyComplete(self) -> None:
        """After the last line of a body or listing: held events, then a pending shutdown."""
        self._flushEvents()
        if self._shutdownAfterTransfer:
            self.endSession("!Server shutting down.")

    def _askChat(self, request: Callable[[], Any], answer: Callable[[Any], None]) -> Deferred[None]:
        """
        Run one chat request and C{answer} with its result.

        The chat service may answer later (a broker): the session reads no
        further command meanwhile, so replies stay in command order.  An
        unavailable chat service becomes its one reply here.
        """

        def answered(result: Any) -> None:
            if not self._ending:
                answer(result)

        d = maybeDeferred(request)
        d.addCallbacks(answered, _chatUnavailable)
        return d

    def cmd_SAY(self, text: str) -> Deferred[None]:
        self._requireLogin()
        if not text:
            raise CommandError("Usage: SAY <text>")
        return self._askChat(lambda: self.factory.chat.say(self, text), lambda _: self.reply("#Said."))

    def cmd_MSG(self, argument: str) -> Deferred[None]:
        self._requireLogin()
        match = _COMMAND_LINE.match(argument)
        if match is None or not match.group(2):
            raise CommandError("Usage: MSG <user> <text>")
        recipient, text = match.group(1), match.group(2)

        def notOnline(failure: Failure) -> None:
            failure.trap(NotOnline)
            raise CommandError(f"No such user online: {sanitize(recipient)}.")

        d = self._askChat(
            lambda: self.factory.chat.message(self, recipient, text), lambda _: self.reply(f"#Sent to {recipient}.")
        )
        return d.addErrback(notOnline)

    def cmd_WHO(self, argument: str) -> Deferred[None]:
        self._requireLogin()
        return self._askChat(
            self.factory.chat.online, lambda names: self._replyLines([f"#{len(names)} users online.", *names])
        )

    def cmd_NICK(self, name: str) -> Deferred[None]:
        """
        A guest picks its chat name.  The checks run in this order: login,
        usage, guest, syntax (all without the chat service), then the chat
        service (unavailable, in use).
        """
        share = self._requireLogin()
        if not name:
            raise CommandError("Usage: NICK <name>")
        if not isGuest(share.user):
            raise CommandError("Only guest sessions have nicknames.")
        if not _NICKNAME.fullmatch(name):
            raise CommandError("Invalid user name.")

        def inUse(failure: Failure) -> None:
            failure.trap(NicknameInUse)
            raise CommandError(f"Nickname ~{name} is in use.")

        d = self._askChat(
            lambda: self.factory.chat.rename(self, name), lambda new: self.reply(f"#You are now {new}.")
        )
        return d.addErrback(inUse)


def _chatUnavailable(failure: Failure) -> None:
    failure.trap(ChatUnavailable)
    raise CommandError(CHAT_UNAVAILABLE)


def _deferToReactorThreads(function: Callable[[], Any]) -> Deferred[Any]:
    """The reactor's thread pool (imported late: tests build factories on a Clock)."""
    from twisted.internet.threads import deferToThread

    return deferToThread(function)


class FilesFactory(ServerFactory):
    """
    Shared configuration of the file service's sessions.

    @param portal: where AUTH logs in.
    @param clock: every timer of the sessions runs on it.
    @param chat: the one chat service, the same the portal's realm puts
        sessions in (presence and delivery must be one object, or WHO and
        MSG would not see who logged in).
    @param authFailureDelay: seconds before a failed AUTH is answered.
    @param loginTimeout: seconds from connecting to logging in (the TLS
        handshake and the PROXY header included); None: no deadline, and
        C{idleTimeout} bounds the wait for the handshake and the header.
    @param trustedProxies: the socket peers whose PROXY headers are believed.
    @param hashes: the server-wide SHA-256 service of HASH (cap, queue, cache).
    """

    noisy = False  # no "Starting factory <... at 0x...>" at info; the port logs where it listens

    def __init__(
        self,
        portal: Portal,
        clock: IReactorTime,
        limiter: ConnectionLimiter,
        chat: IChat,
        idleTimeout: float | None = 300.0,
        maxLine: int = 4096,
        authFailureDelay: float = 1.0,
        loginTimeout: float | None = 60.0,
        penalties: LoginPenalties | None = None,
        trustedProxies: Iterable[Network] = LOOPBACK,
        hashes: FileHasher | None = None,
    ) -> None:
        self.portal = portal
        self.clock = clock
        self.limiter = limiter
        realmChat = getattr(portal.realm, "chat", chat)
        if realmChat is not chat:
            raise ValueError("the files factory and the portal's realm must share one chat service")
        self.chat = chat
        self.idleTimeout = idleTimeout
        self.maxLine = maxLine
        self.authFailureDelay = authFailureDelay
        self.loginTimeout = loginTimeout
        self.penalties = penalties
        self.admission = AdmissionPolicy(
            clock, limiter, loginTimeout if loginTimeout is not None else idleTimeout, trustedProxies,
        )
        self.hashes = hashes if hashes is not None else FileHasher(_deferToReactorThreads)
        self.sessions = SessionTracker()

    def buildProtocol(self, addr: IAddress) -> Protocol:
        session = FileSession(self)
        self.sessions.add(session)
        return session
