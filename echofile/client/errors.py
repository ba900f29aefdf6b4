"""
Everything a client request can fail with, and how a failed TLS connection
is described to a person.
"""

from __future__ import annotations

from twisted.python.failure import Failure

#: Said after a certificate verification failure: the usual cause and its cure.
TRUST_ROOTS_HINT = (
    "if the server's certificate comes from your own authority, add "
    "trustRoots=FOLDER (a folder of PEM files) to the tls: endpoint"
)


class ClientError(Exception):
    """Base of everything a request can fail with."""


class ServerError(ClientError):
    """
    The server answered with an error line.

    @ivar reply: the reply text without its leading ``!``, as the server sent
        it (show it through L{echofile.text.sanitize}).
    """

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class ConnectionClosed(ClientError):
    """
    The connection ended before the reply arrived.

    @ivar serverSaid: the server's last unsolicited error line (such as
        ``Idle timeout.``), which usually explains why, or C{None}.
    """

    def __init__(self, message: str, serverSaid: str | None = None) -> None:
        if serverSaid:
            message = f"{message} (server said: {serverSaid})"
        super().__init__(message)
        self.serverSaid = serverSaid


class TransferIncomplete(ConnectionClosed):
    """The connection ended inside a file body: what arrived is not the file."""

    def __init__(self, received: int, size: int, serverSaid: str | None = None) -> None:
        super().__init__(f"connection lost after {received} of {size} bytes", serverSaid)
        self.received = received
        self.size = size


class ReplyTimeout(ClientError):
    """No reply and no progress within the timeout; the connection was dropped."""


class ProtocolViolation(ClientError):
    """The server said something this client cannot make sense of (or will not accept); the connection was dropped."""


class Interrupted(ClientError):
    """The user interrupted the run (Ctrl-C); the connection was dropped."""

    def __init__(self) -> None:
        super().__init__("interrupted")


def describeTLSError(reason: Failure | None) -> str | None:
    """
    A readable reason if the connection died of a TLS error (an untrusted or
    wrong-name certificate, a failed handshake), else None.

    pyOpenSSL's errors carry a list of (library, function, reason) tuples;
    the reasons are what a user needs ("certificate verify failed"), and a
    verification failure says how to trust a private authority.
    """
    if reason is None or not type(reason.value).__module__.startswith("OpenSSL"):
        return None
    details = reason.value.args[0] if reason.value.args else None
    text = reason.getErrorMessage()
    if isinstance(details, list):
        reasons = [entry[-1] for entry in details if isinstance(entry, tuple) and entry and entry[-1]]
        if reasons:
            text = ", ".join(reasons)
    if "certificate verify failed" in text:
        text = f"{text} ({TRUST_ROOTS_HINT})"
    return text
