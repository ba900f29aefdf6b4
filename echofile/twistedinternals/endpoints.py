"""
Inside server endpoints: the TLS options of an C{ssl:} endpoint (to turn
session resumption on), a hook on the port it listens with, and that
port's TLS factory (for L{echofile.tlslayer}).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.endpoints import SSL4ServerEndpoint, _WrapperServerEndpoint

from echofile.twistedinternals.tlsrecords import _TLS_FACTORY


def serverTLSOptions(endpoint: object) -> Any | None:
    """
    The C{CertificateOptions} an C{ssl:} server endpoint will listen with
    (also under C{haproxy:}), or None for any other endpoint.

    Twisted's C{ssl:} parser builds them with its defaults and keeps them
    in the endpoint's C{_sslContextFactory}; the PROXY wrapper endpoint
    keeps the endpoint it wraps in C{_wrappedEndpoint}.
    """
    for _ in range(4):  # haproxy:ssl: is one wrapper; never a cycle
        if isinstance(endpoint, SSL4ServerEndpoint):
            return endpoint._sslContextFactory
        if not isinstance(endpoint, _WrapperServerEndpoint):
            return None
        endpoint = endpoint._wrappedEndpoint
    return None


class ListeningHook(_WrapperServerEndpoint):
    """
    An endpoint that listens with the one it wraps, then hands the listening
    port to C{hook} before anyone gets it.  A C{_WrapperServerEndpoint}, so
    L{serverTLSOptions} still finds the options inside.
    """

    def __init__(self, wrapped: Any, hook: Callable[[Any], None]) -> None:
        super().__init__(wrapped, lambda factory: factory)
        self._hook = hook

    def listen(self, protocolFactory: Any) -> Any:
        def hooked(port: Any) -> Any:
            self._hook(port)
            return port

        return super().listen(protocolFactory).addCallback(hooked)


def tlsFactoryOf(port: Any) -> Any | None:
    """The C{TLSMemoryBIOFactory} a listening port (C{ssl:}: C{listenSSL}) accepts with, or None."""
    factory = getattr(port, "factory", None)
    return factory if _TLS_FACTORY is not None and type(factory) is _TLS_FACTORY else None
