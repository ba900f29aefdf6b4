"""
The echofile client: L{protocol.FileClient} for programs, ``echofile-client``
(L{main.main}) for people and scripts.
"""

from echofile.client.protocol import (
    ClientError,
    ConnectionClosed,
    Entry,
    FileClient,
    FileSink,
    MemorySink,
    ProtocolViolation,
    ReplyTimeout,
    ServerError,
    TransferIncomplete,
)

__all__ = [
    "ClientError",
    "ConnectionClosed",
    "Entry",
    "FileClient",
    "FileSink",
    "MemorySink",
    "ProtocolViolation",
    "ReplyTimeout",
    "ServerError",
    "TransferIncomplete",
]
