"""
The echofile client: L{protocol.FileClient} for programs, ``echofile-client``
(L{main.main}) for people and scripts.
"""

from echofile.client.errors import (
    ClientError,
    ConnectionClosed,
    Interrupted,
    ProtocolViolation,
    ReplyTimeout,
    ServerError,
    TransferIncomplete,
)
from echofile.client.protocol import FileClient
from echofile.client.replies import Entry, FileSink
from echofile.client.sinks import MemorySink

__all__ = [
    "ClientError",
    "ConnectionClosed",
    "Entry",
    "FileClient",
    "FileSink",
    "Interrupted",
    "MemorySink",
    "ProtocolViolation",
    "ReplyTimeout",
    "ServerError",
    "TransferIncomplete",
]
