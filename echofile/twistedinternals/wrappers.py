"""
LineReceiver's input buffer and loop flag, and the PROXY protocol
wrapper's parsed header and C{dataReceived}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.protocols.basic import LineReceiver


try:
    # Private in Twisted: the class behind the public proxyEndpoint / haproxy: endpoint.
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
except ImportError:  # pragma: no cover - a Twisted without PROXY support
    HAProxyProtocolWrapper = None  # type: ignore[assignment,misc]


def unframedInput(protocol: LineReceiver) -> bytes:
    """What a LineReceiver has received but not yet framed into a line."""
    return protocol._buffer


def insideLineLoop(protocol: LineReceiver) -> bool:
    """Is C{protocol}'s dataReceived still looping over received lines (more may follow)?"""
    return bool(protocol._busyReceiving)


def isProxyWrapper(transport: object) -> bool:
    """Is C{transport} Twisted's PROXY protocol wrapper (a C{haproxy:} endpoint)?"""
    return HAProxyProtocolWrapper is not None and isinstance(transport, HAProxyProtocolWrapper)


def parsedHeader(wrapper: Any) -> Any:
    """The wrapper's parsed PROXY header (its C{source}), or None while it is incomplete."""
    return wrapper._proxyInfo


def interceptData(wrapper: Any, handler: Callable[[bytes], None]) -> None:
    """Route what the wrapper receives to C{handler} (shadowing its method on this instance only)."""
    wrapper.dataReceived = handler


def restoreData(wrapper: Any) -> None:
    """Undo L{interceptData}: back to the class's C{dataReceived}."""
    wrapper.__dict__.pop("dataReceived", None)
